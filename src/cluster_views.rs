//! The rules' views on a cluster's dataflow computation: which views every node installs
//! when the computation forms, in which order, and from which storage.
//!
//! Every node of a computation must build the same dataflows in the same order, so the
//! views are fixed when it forms: those of every rule that reads views in the rule files,
//! sorted by expression. Nodes with other rule files do not join each other (the catalog is
//! part of the handshake's fingerprint); a reload that changes the rules makes the node
//! leave, and the computation forms again once every node has the same rules.

use std::sync::{Arc, RwLock};

use promflow_incremental::cluster::{fingerprint_of, Occupant};
use promflow_incremental::live::LiveViews;
use promflow_incremental::{Grain, Incremental};
use promflow_plan::Plan;
use promflow_rules::GroupSpec;
use promflow_storage::{Db, Querier};

/// One view of the catalog: the expression's text (what the catalog is sorted by), its
/// plan, and the grain it is read at.
type CatalogEntry = (String, Plan, Option<Grain>);

/// The views a computation is formed with, and their fingerprint.
struct Catalog {
    entries: Vec<CatalogEntry>,
    fingerprint: u64,
}

/// The rules' views, installed on each computation the cluster forms.
pub struct RuleViews {
    db: Arc<Db>,
    /// Every node's storage, for the samples of long windows read back.
    cluster: Arc<dyn Querier>,
    catalog: RwLock<Arc<Catalog>>,
}

impl RuleViews {
    /// The views of `groups`, with history from `db` (each node loads what it stores) and
    /// windows read back from `cluster`.
    pub fn new(db: Arc<Db>, cluster: Arc<dyn Querier>, groups: &[GroupSpec]) -> RuleViews {
        let empty = Catalog { entries: Vec::new(), fingerprint: 0 };
        let views = RuleViews { db, cluster, catalog: RwLock::new(Arc::new(empty)) };
        views.set_groups(groups);
        views
    }

    /// Takes the rules of `groups` (at start and at every reload).
    pub fn set_groups(&self, groups: &[GroupSpec]) {
        let mut entries: Vec<CatalogEntry> = groups
            .iter()
            .flat_map(|g| g.view_plans())
            .map(|(query, plan, grain)| (query.to_string(), plan.clone(), grain))
            .collect();
        // what the dataflow builds: the plans (the same text can compile otherwise under
        // other flags) and grains
        let key = |e: &CatalogEntry| (format!("{:?}", e.1), format!("{:?}", e.2));
        entries.sort_by_cached_key(|e| (e.0.clone(), key(e)));
        entries.dedup_by(|a, b| key(a) == key(b));
        let fingerprint = fingerprint_of(entries.iter().map(key).collect::<Vec<_>>());
        *self.catalog.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(Catalog { entries, fingerprint });
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
        for (_, plan, grain) in &catalog.entries {
            if views.lost() {
                return Err("the computation failed while its views were installed".into());
            }
            // a recording rule's view starts at its grain's last time, where it is read from
            let t = grain.and_then(|g| g.last_at_or_before(now)).unwrap_or(now);
            drop(views.prepare([(plan, *grain)], t));
        }
        views.close();
        tracing::info!(
            views = catalog.entries.len(),
            "the rules' views are installed on the cluster's dataflow"
        );
        Ok(views)
    }
}
