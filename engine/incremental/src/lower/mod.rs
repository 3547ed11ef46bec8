//! The lowerings of the plan IR for the incremental executor, side by side: what each one
//! maintains is decided here, and nowhere else.
//!
//! * [`dataflow`]: a plan becomes a [`dataflow::Node`] tree that every worker renders as
//!   timely/differential operators (`crate::render`). Rules' views and the clients' views
//!   the hub does not hold.
//! * [`hub`]: a plan of the common dashboard shapes becomes [`hub::HubNode`]s, data in one
//!   operator on the first worker (`crate::hub`). Clients' views only.
//! * The batch executor (`promflow-batch`) evaluates every plan: what neither lowering
//!   accepts ([`promflow_plan::Error::Unsupported`], with the reason) is evaluated there at
//!   each rule evaluation, or every `--subscribe.batch-interval` for a subscription.
//!
//! What each lowering maintains is tabled in `docs/dataflow.md` ("What is maintained"); the
//! code here is the rule, and each refusal is an [`unsupported`] with its reason.

pub(crate) mod dataflow;
pub(crate) mod hub;

use promflow_kernels as kernels;
use promflow_plan::{Error, MapFn, Plan, TimeAnchor, TimeShift, WindowFn};

/// The incremental executor's refusal: the batch executor evaluates the plan instead.
pub(crate) fn unsupported(what: impl std::fmt::Display) -> Error {
    Error::Unsupported(what.to_string())
}

/// The value of a scalar plan that does not depend on time or data.
pub(crate) fn constant(plan: &Plan) -> Option<f64> {
    match plan {
        Plan::Number(n) => Some(*n),
        Plan::ScalarOp { op, lhs, rhs, .. } => Some(kernels::binary(*op, constant(lhs)?, constant(rhs)?)),
        Plan::Map { func: MapFn::Negate, input, .. } => constant(input).map(|v| -v),
        _ => None,
    }
}

/// The values of scalar arguments that must be constants ([`Error::Unsupported`] otherwise).
pub(crate) fn constants(args: &[Plan]) -> Result<Vec<f64>, Error> {
    args.iter()
        .map(|a| constant(a).ok_or_else(|| unsupported("a scalar argument that is not a constant")))
        .collect()
}

/// When a selection or window is evaluated, relative to the view's evaluation time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LeafTime {
    /// At each evaluation, over the samples counted this many milliseconds after their
    /// timestamps (a positive `offset`, or none): the same as evaluating that much earlier.
    Shifted(i64),
    /// At this fixed time whatever the evaluation's (`@ t`, its offset taken off): samples
    /// after it are ignored, and nothing expires as the clock moves.
    Pinned(i64),
}

impl LeafTime {
    /// How a shift is maintained; `None` for negative offsets and `@ start()`/`@ end()`,
    /// which read samples after the evaluation or a query range a view does not have.
    pub(crate) fn of(shift: &TimeShift) -> Option<LeafTime> {
        match shift.at {
            TimeAnchor::Step if shift.offset_ms >= 0 => Some(LeafTime::Shifted(shift.offset_ms)),
            TimeAnchor::Fixed(t) => Some(LeafTime::Pinned(t.saturating_sub(shift.offset_ms))),
            _ => None,
        }
    }
}

/// Why a shifted selection is not maintained.
pub(crate) const NOT_SHIFTED: &str =
    "@ start(), @ end(), a negative offset, or an offset under a function of the samples' times";

/// When a window function over a window or subquery shifted by `shift` is evaluated: a
/// shifted window is the window over samples counted `offset` later, except for what reads
/// the samples' times against the evaluation's.
pub(crate) fn window_time(func: WindowFn, shift: &TimeShift) -> Result<LeafTime, Error> {
    LeafTime::of(shift)
        .filter(|t| !matches!(t, LeafTime::Shifted(o) if *o > 0 && func.reads_sample_times()))
        .ok_or_else(|| unsupported(NOT_SHIFTED))
}

/// Why a smoothed selection is not maintained: its value at an evaluation interpolates
/// towards the first sample after it, which a view has not seen yet.
pub(crate) const NOT_CAUSAL: &str = "smoothed edges, which read samples after the evaluation time";
