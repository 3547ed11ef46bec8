//! The exchange the executor's own operators send records to their owner worker with:
//! timely's, but each channel to a worker of another process remembers the keys it has sent
//! there, and sends a key's labels only the first time ([`crate::keys::Key`]).
//!
//! A key is the hash of its labels, so after its first trip a number is enough for the
//! receiver to find the labels in its own table. The memory is per channel and receiving
//! worker because timely delivers one channel's messages from one worker to another in the
//! order they were sent, but gives no order between channels: a key first sent down another
//! channel could arrive after this one's, so each channel carries the labels it relies on.
//! The receiving worker then enters a key's labels in its table once, not at every record;
//! with the rules as views on a 3-node cluster, the bytes between nodes per sample fell from
//! 245 to 105 (`docs/benchmarks.md`).

use std::rc::Rc;
use std::sync::Arc;

use differential_dataflow::hashable::Hashable as _;
use differential_dataflow::operators::arrange::arrangement::arrange_core;
use differential_dataflow::operators::arrange::{Arranged, TraceAgent};
use differential_dataflow::trace::implementations::{ValBatcher, ValSpine};
use differential_dataflow::VecCollection;
use timely::communication::{Pull, Push};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::{LogPuller, LogPusher, ParallelizationContract, Pipeline};
use timely::dataflow::channels::pushers::exchange::DrainContainerDistributor;
use timely::dataflow::channels::pushers::Exchange;
use timely::dataflow::channels::Message;
use timely::logging::TimelyLogger;
use timely::progress::Timestamp;
use timely::worker::Worker;

use crate::keys::{Carried, Key};

/// The process of a cluster whose workers keep a series' samples, by the series' key (its
/// labels' Prometheus hash): in a cluster, the process whose node places the series' primary
/// copy by that hash, so that a series appended where it is stored stays there.
pub type SeriesOwner = Arc<dyn Fn(u64) -> usize + Send + Sync>;

/// Which worker keeps a series' samples (its windows in the per-series operator). Any
/// function of the key keeps the operator right, since every copy of a series' samples
/// meets on the worker it names; placing series on the process that appends them spares
/// the network their samples and their labels, and each process's key table the series of
/// other processes (`docs/decisions/2026-11-29-series-stay-where-stored.md`).
#[derive(Clone)]
pub(crate) enum SeriesRoute {
    /// By the key alone, among every worker of the computation (one process).
    Hashed,
    /// On a worker of the process `owner` names, by the key among its `width` workers.
    Placed { owner: SeriesOwner, width: usize },
}

impl SeriesRoute {
    /// The exchange's route for a series' rows: a worker's index (timely numbers process
    /// `p`'s workers from `p` times their number, and takes a route below the number of
    /// workers as the index itself), or, unplaced, the key for timely to spread.
    pub(crate) fn worker(&self, key: Key) -> u64 {
        match self {
            SeriesRoute::Hashed => key.0,
            SeriesRoute::Placed { owner, width } => {
                let width = (*width).max(1) as u64;
                owner(key.0) as u64 * width + key.0 % width
            }
        }
    }
}

/// An exchange of `Vec<D>` records by `route` (a record's owner among the workers, as
/// timely's `Exchange` pact takes it) whose channels to other processes send each key's
/// labels once.
pub(crate) struct KeyExchange<F>(F);

impl<F> KeyExchange<F> {
    /// The exchange of records to the workers `route` names.
    pub(crate) fn new(route: F) -> Self {
        KeyExchange(route)
    }
}

/// One message of records, as the exchange sends it to a worker.
type Records<T, D> = Message<T, Vec<D>>;

impl<T, D, F> ParallelizationContract<T, Vec<D>> for KeyExchange<F>
where
    T: Timestamp,
    D: timely::ExchangeData,
    F: FnMut(&D) -> u64 + 'static,
{
    type Pusher = Exchange<
        T,
        LogPusher<CarryingPusher<Box<dyn Push<Records<T, D>>>>>,
        DrainContainerDistributor<CapacityContainerBuilder<Vec<D>>, F>,
    >;
    type Puller = LogPuller<Box<dyn Pull<Records<T, D>>>>;

    fn connect(
        self,
        worker: &Worker,
        identifier: usize,
        address: Rc<[usize]>,
        logging: Option<TimelyLogger>,
    ) -> (Self::Pusher, Self::Puller) {
        let (senders, receiver) = worker.allocate::<Records<T, D>>(identifier, address);
        let senders = senders
            .into_iter()
            .enumerate()
            .map(|(target, pusher)| {
                let pusher = CarryingPusher { pusher, carried: Carried::default() };
                LogPusher::new(pusher, worker.index(), target, identifier, logging.clone())
            })
            .collect();
        let distributor = DrainContainerDistributor::new(self.0, worker.peers());
        (Exchange::new(senders, distributor), LogPuller::new(receiver, worker.index(), identifier, logging))
    }
}

/// One channel's pusher to one worker, with the keys it has carried the labels of. To a
/// worker of this process nothing is written and the record stays empty.
pub(crate) struct CarryingPusher<P> {
    pusher: P,
    carried: Carried,
}

impl<M, P: Push<M>> Push<M> for CarryingPusher<P> {
    fn push(&mut self, element: &mut Option<M>) {
        let pusher = &mut self.pusher;
        if element.is_none() {
            // a flush writes nothing
            return pusher.push(element);
        }
        self.carried.written(|| pusher.push(element));
    }
}

/// A view's arrangement of keyed values.
type KeyedArrangement<'s, V> = Arranged<'s, TraceAgent<ValSpine<Key, V, u64, isize>>>;

/// `collection` arranged by key on the workers differential's `arrange_by_key` puts each key
/// on (so that it joins with arrangements differential makes), over a [`KeyExchange`];
/// `name` is the operator's in timely's logs and dataflow graphs.
pub(crate) fn arrange_by_key<'s, V>(
    collection: VecCollection<'s, u64, (Key, V), isize>,
    name: &str,
) -> KeyedArrangement<'s, V>
where
    V: differential_dataflow::ExchangeData,
{
    let route = KeyExchange::new(|u: &((Key, V), u64, isize)| (u.0).0.hashed());
    arrange_over(collection, route, name)
}

/// `collection` arranged on the workers that make it, without an exchange: for a per-series
/// operator's values, made on the worker [`SeriesRoute`] keeps each series on, so that in a
/// cluster a series' values stay in the process that stores it (their keys and labels too).
/// Every update of a key comes from the worker of the series that makes it, the same one at
/// every time; only keys that several series make (the duplicates a view reports as an
/// error) can be held on more than one worker, and a read adds up every worker's.
pub(crate) fn arrange_in_place<'s, V>(
    collection: VecCollection<'s, u64, (Key, V), isize>,
    name: &str,
) -> KeyedArrangement<'s, V>
where
    V: differential_dataflow::ExchangeData,
{
    arrange_over(collection, Pipeline, name)
}

/// `collection` arranged by key where `pact` sends its updates.
fn arrange_over<'s, V, P>(
    collection: VecCollection<'s, u64, (Key, V), isize>,
    pact: P,
    name: &str,
) -> KeyedArrangement<'s, V>
where
    V: differential_dataflow::ExchangeData,
    P: ParallelizationContract<u64, Vec<((Key, V), u64, isize)>>,
{
    arrange_core::<_, _, ValBatcher<Key, V, u64, isize>, ValSpine<Key, V, u64, isize>>(
        collection.inner,
        pact,
        name,
        ValBatcher::new,
    )
}
