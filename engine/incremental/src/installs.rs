//! Which dataflow built each arrangement, and who still needs each dataflow.
//!
//! Every view whose plan adds operators is built as one dataflow (an installation). A view
//! reads one arrangement; a later installation may import arrangements of earlier ones
//! (shared sub-expressions). An installation is needed while a view reads one of its
//! arrangements or another installation imports one; once nothing needs it,
//! [`super::Incremental::uninstall`] drops it on every worker, and with it what it keeps.

use std::collections::HashMap;

use crate::lower::dataflow::Node;

/// What one installation built, and what it needs.
#[derive(Debug, Default)]
pub(crate) struct Install {
    /// The arrangements it registered.
    pub(crate) arrangements: Vec<usize>,
    /// The leaf inputs it created.
    pub(crate) leaves: Vec<usize>,
    /// The steps of its subqueries.
    pub(crate) subquery_steps: Vec<u64>,
    /// The installations whose arrangements it imports.
    imports: Vec<usize>,
    /// Views that read one of its arrangements, plus installations that import one.
    users: usize,
}

/// The live installations.
#[derive(Debug, Default)]
pub(crate) struct Installs {
    next: usize,
    live: HashMap<usize, Install>,
    /// The installation that built each live arrangement.
    built_by: HashMap<usize, usize>,
}

impl Installs {
    /// Records the installation of `node` and returns its number; the installations it
    /// imports from gain a user. It has no user itself until a view reads it.
    pub(crate) fn add(&mut self, node: &Node) -> usize {
        let number = self.next;
        self.next += 1;
        let mut install = Install::default();
        let mut imported = Vec::new();
        node.walk(&mut |n| match n {
            Node::Arrange { id, .. } => install.arrangements.push(*id),
            Node::Series { leaf, .. } => install.leaves.push(*leaf),
            Node::Subquery { leaf, step_ms, .. } => {
                install.leaves.push(*leaf);
                install.subquery_steps.push((*step_ms).max(1) as u64);
            }
            Node::Import(id) => imported.push(*id),
            _ => {}
        });
        // an import of an arrangement built earlier in the same tree is not a dependency:
        // those are not in `built_by` yet
        for arrangement in imported {
            if let Some(&by) = self.built_by.get(&arrangement) {
                if !install.imports.contains(&by) {
                    install.imports.push(by);
                }
            }
        }
        for by in &install.imports {
            if let Some(i) = self.live.get_mut(by) {
                i.users += 1;
            }
        }
        for a in &install.arrangements {
            self.built_by.insert(*a, number);
        }
        self.live.insert(number, install);
        number
    }

    /// The steps of installation `number`'s subqueries.
    pub(crate) fn subquery_steps(&self, number: usize) -> Vec<u64> {
        self.live.get(&number).map(|i| i.subquery_steps.clone()).unwrap_or_default()
    }

    /// A view reads `arrangement`: the installation that built it gains a user.
    pub(crate) fn read_by_view(&mut self, arrangement: usize) {
        if let Some(i) = self.built_by.get(&arrangement).and_then(|by| self.live.get_mut(by)) {
            i.users += 1;
        }
    }

    /// A view no longer reads `arrangement`. Returns the installations nothing needs any
    /// more, each with its number, dependents before what they import.
    pub(crate) fn release(&mut self, arrangement: usize) -> Vec<(usize, Install)> {
        let mut freed = Vec::new();
        let mut losing: Vec<usize> = self.built_by.get(&arrangement).copied().into_iter().collect();
        while let Some(number) = losing.pop() {
            let Some(install) = self.live.get_mut(&number) else { continue };
            install.users = install.users.saturating_sub(1);
            if install.users > 0 {
                continue;
            }
            let Some(install) = self.live.remove(&number) else { continue };
            for a in &install.arrangements {
                self.built_by.remove(a);
            }
            losing.extend(install.imports.iter().copied());
            freed.push((number, install));
        }
        freed
    }

    /// How many installations are live.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.live.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use promflow_storage::Labels;

    fn constant(id: usize) -> Node {
        Node::Arrange { id, input: Box::new(Node::Constant { labels: Labels::new(), value: 1.0 }) }
    }

    #[test]
    fn a_shared_installation_lives_until_its_last_view_and_importer_go() {
        let mut installs = Installs::default();
        // view 1 builds arrangement 0; view 2 imports it into arrangement 1; view 3 reads 0
        installs.add(&constant(0));
        installs.read_by_view(0);
        let importer = Node::Arrange {
            id: 1,
            input: Box::new(Node::Map {
                input: Box::new(Node::Import(0)),
                func: promflow_plan::MapFn::Abs,
                args: vec![],
            }),
        };
        installs.add(&importer);
        installs.read_by_view(1);
        installs.read_by_view(0);
        assert_eq!(installs.len(), 2);
        assert!(installs.release(0).is_empty(), "view 3 went; view 1 and the importer still need 0");
        assert!(installs.release(0).is_empty(), "view 1 went; the importer still needs 0");
        let freed: Vec<usize> = installs.release(1).into_iter().map(|(n, _)| n).collect();
        assert_eq!(freed, vec![1, 0], "the importer goes, then what it imported");
        assert_eq!(installs.len(), 0);
    }
}
