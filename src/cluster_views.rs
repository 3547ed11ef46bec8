//! The rules' views on a cluster's dataflow computation: which views every node installs
//! when the computation forms, in which order, and from which storage.
//!
//! Every node of a computation must build the same dataflows in the same order, so the
//! views are fixed when it forms: those of every rule that reads views in the rule files,
//! sorted by expression. Nodes with other rule files do not join each other (the catalog is
//! part of the handshake's fingerprint); a reload that changes the rules makes the node
//! leave, and the computation forms again once every node has the same rules.
//!
//! While the computation is formed, each group is evaluated on one node, its evaluator (by
//! a hash of the group's name and file name over the peers), and each view is copied whole
//! only to the nodes that evaluate a group reading it.
//!
//! Clients' subscriptions come later, through the computation's sequenced log: every node
//! installs each at the same place in the log ([`LiveViews::serve_subscriptions`]).

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};

use promflow_incremental::cluster::{fingerprint_of, Formation, Occupant};
use promflow_incremental::live::{CompileFn, LiveViews};
use promflow_incremental::{Grain, Incremental};
use promflow_plan::Plan;
use promflow_rules::{ClusterTurn, GroupSpec};
use promflow_storage::{Db, Querier};

use crate::cluster::Cluster;

/// One view of the catalog: the expression's text (what the catalog is sorted by), its
/// plan, the grain it is read at, and the nodes that read it (the evaluators of the groups
/// whose rules read it).
type CatalogEntry = (String, Plan, Option<Grain>, BTreeSet<usize>);

/// The views a computation is formed with, and their fingerprint.
struct Catalog {
    entries: Vec<CatalogEntry>,
    fingerprint: u64,
}

/// The rules' views, installed on each computation the cluster forms.
pub struct RuleViews {
    /// The computation's nodes, in the order of its processes.
    cluster: Cluster,
    db: Arc<Db>,
    /// Every node's storage, for the samples of long windows read back.
    everywhere: Arc<dyn Querier>,
    catalog: RwLock<Arc<Catalog>>,
    /// How every node compiles the clients' subscriptions.
    compile: CompileFn,
}

impl RuleViews {
    /// The views of `groups` on the computation of `cluster`'s nodes, with history from `db`
    /// (each node loads what it stores) and windows read back from `everywhere`; the clients'
    /// subscriptions compiled with `compile`.
    pub fn new(
        cluster: Cluster,
        (db, everywhere): (Arc<Db>, Arc<dyn Querier>),
        groups: &[GroupSpec],
        compile: CompileFn,
    ) -> RuleViews {
        let empty = Catalog { entries: Vec::new(), fingerprint: 0 };
        let catalog = RwLock::new(Arc::new(empty));
        let views = RuleViews { cluster, db, everywhere, catalog, compile };
        views.set_groups(groups);
        views
    }

    /// Takes the rules of `groups` (at start and at every reload).
    pub fn set_groups(&self, groups: &[GroupSpec]) {
        let mut entries: Vec<CatalogEntry> = groups
            .iter()
            .flat_map(|g| {
                let evaluator = self.evaluator(g);
                g.view_plans().into_iter().map(move |(query, plan, grain)| {
                    (query.to_string(), plan.clone(), grain, BTreeSet::from([evaluator]))
                })
            })
            .collect();
        // what the dataflow builds: the plans (the same text can compile otherwise under
        // other flags) and grains
        let key = |e: &CatalogEntry| (format!("{:?}", e.1), format!("{:?}", e.2));
        entries.sort_by_cached_key(|e| (e.0.clone(), key(e)));
        entries.dedup_by(|later, kept| {
            let same = key(later) == key(kept);
            if same {
                kept.3.extend(later.3.iter().copied());
            }
            same
        });
        let fingerprint = fingerprint_of(entries.iter().map(|e| (key(e), &e.3)).collect::<Vec<_>>());
        *self.catalog.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(Catalog { entries, fingerprint });
    }

    /// The node that evaluates `group` while the computation is formed: the owner of a hash
    /// of its name and its rule file's name (not the file's path, which may differ between
    /// nodes), so that every node agrees without asking.
    fn evaluator(&self, group: &GroupSpec) -> usize {
        let file = std::path::Path::new(&group.file).file_name().map(|f| f.to_string_lossy());
        let key = format!("{}\0{}", group.name, file.unwrap_or_default());
        self.cluster.owner(xxhash_rust::xxh3::xxh3_64(key.as_bytes()))
    }

    /// Where `group` is evaluated now: on its evaluator while the computation `formation`
    /// is formed, reading its views; on every node, in batch, while it is not.
    pub fn turn(&self, formation: &Formation, group: &GroupSpec) -> ClusterTurn {
        match formation.current() {
            None => ClusterTurn::Batch,
            Some(views) if self.evaluator(group) == self.cluster.index() => ClusterTurn::Here(views),
            Some(_) => ClusterTurn::Elsewhere,
        }
    }

    fn catalog(&self) -> Arc<Catalog> {
        Arc::clone(&self.catalog.read().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Occupant for RuleViews {
    fn fingerprint(&self) -> u64 {
        self.catalog().fingerprint
    }

    fn occupy(&self, inc: Incremental, fingerprint: u64) -> Result<Arc<LiveViews>, String> {
        let catalog = self.catalog();
        if catalog.fingerprint != fingerprint {
            return Err("the rules changed while the computation formed".into());
        }
        let in_cluster = inc.process().is_some();
        let db = Arc::clone(&self.db);
        let history = Arc::clone(&self.db) as Arc<dyn Querier>;
        let views = LiveViews::start_over(
            inc,
            |wake| db.subscribe_waking(wake),
            history,
            Arc::clone(&self.everywhere),
            true,
        )?;
        let now = promflow_storage::now_ms();
        for (_, plan, grain, readers) in &catalog.entries {
            if views.lost() {
                return Err("the computation failed while its views were installed".into());
            }
            // a recording rule's view starts at its grain's last time, where it is read from
            let t = grain.and_then(|g| g.last_at_or_before(now)).unwrap_or(now);
            drop(views.prepare_read_on([(plan, *grain)], t, Some(readers)));
        }
        views.close();
        // a computation of one process has no log: its subscriptions are its own
        if in_cluster {
            views.serve_subscriptions(Arc::clone(&self.compile))?;
        }
        tracing::info!(
            views = catalog.entries.len(),
            "the rules' views are installed on the cluster's dataflow"
        );
        Ok(views)
    }
}
