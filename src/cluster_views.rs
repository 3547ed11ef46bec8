//! The rules' views on a cluster's dataflow computation: which views every node installs
//! when the computation forms, in which order, and from which storage.
//!
//! Every node of a computation must build the same dataflows in the same order, so the
//! views are fixed when it forms: those of every rule that reads views in the rule files,
//! sorted by expression. Nodes with other rule files do not join each other (the catalog is
//! part of the handshake's fingerprint); a reload that changes the rules makes the node
//! leave, and the computation forms again once every node has the same rules.

use std::sync::{Arc, RwLock};

use promflow_incremental::cluster::Occupant;
use promflow_incremental::live::LiveViews;
use promflow_incremental::{Grain, Incremental};
use promflow_plan::Plan;
use promflow_rules::GroupSpec;
use promflow_storage::{Db, Querier};

/// One view of the catalog: the expression's text (what the catalog is sorted and compared
/// by), its plan, and the grain it is read at.
type CatalogEntry = (String, Plan, Option<Grain>);

/// The rules' views, installed on each computation the cluster forms.
pub struct RuleViews {
    db: Arc<Db>,
    /// Every node's storage, for the samples of long windows read back.
    cluster: Arc<dyn Querier>,
    catalog: RwLock<Vec<CatalogEntry>>,
}

impl RuleViews {
    /// The views of `groups`, with history from `db` (each node loads what it stores) and
    /// windows read back from `cluster`.
    pub fn new(db: Arc<Db>, cluster: Arc<dyn Querier>, groups: &[GroupSpec]) -> RuleViews {
        let views = RuleViews { db, cluster, catalog: RwLock::default() };
        views.set_groups(groups);
        views
    }

    /// Takes the rules of `groups` (at start and at every reload).
    pub fn set_groups(&self, groups: &[GroupSpec]) {
        let mut catalog: Vec<CatalogEntry> = groups
            .iter()
            .flat_map(|g| g.view_plans())
            .map(|(query, plan, grain)| (query.to_string(), plan.clone(), grain))
            .collect();
        catalog.sort_by(|a, b| (&a.0, format!("{:?}", a.2)).cmp(&(&b.0, format!("{:?}", b.2))));
        catalog.dedup_by(|a, b| a.0 == b.0 && a.2 == b.2);
        *self.catalog.write().unwrap_or_else(|e| e.into_inner()) = catalog;
    }
}

impl Occupant for RuleViews {
    fn fingerprint(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        for (query, _, grain) in self.catalog.read().unwrap_or_else(|e| e.into_inner()).iter() {
            (query, format!("{grain:?}")).hash(&mut h);
        }
        h.finish()
    }

    fn occupy(&self, inc: Incremental) -> Result<Arc<LiveViews>, String> {
        let db = Arc::clone(&self.db);
        let history = Arc::clone(&self.db) as Arc<dyn Querier>;
        let views = LiveViews::start_over(
            inc,
            |wake| db.subscribe_waking(wake),
            history,
            Arc::clone(&self.cluster),
            true,
        )?;
        let now = promflow_storage::now_ms();
        let catalog = self.catalog.read().unwrap_or_else(|e| e.into_inner());
        for (_, plan, grain) in catalog.iter() {
            // a recording rule's view starts at its grain's last time, where it is read from
            let t = grain.and_then(|g| g.last_at_or_before(now)).unwrap_or(now);
            drop(views.prepare([(plan, *grain)], t));
        }
        views.close();
        tracing::info!(views = catalog.len(), "the rules' views are installed on the cluster's dataflow");
        Ok(views)
    }
}
