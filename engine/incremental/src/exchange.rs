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

use differential_dataflow::hashable::Hashable as _;
use differential_dataflow::operators::arrange::arrangement::arrange_core;
use differential_dataflow::operators::arrange::{Arranged, TraceAgent};
use differential_dataflow::trace::implementations::{ValBatcher, ValSpine};
use differential_dataflow::VecCollection;
use timely::communication::{Pull, Push};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::{LogPuller, LogPusher, ParallelizationContract};
use timely::dataflow::channels::pushers::exchange::DrainContainerDistributor;
use timely::dataflow::channels::pushers::Exchange;
use timely::dataflow::channels::Message;
use timely::logging::TimelyLogger;
use timely::progress::Timestamp;
use timely::worker::Worker;

use crate::keys::{Carried, Key};

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

/// `collection` arranged by key on the workers differential's `arrange_by_key` puts each key
/// on (so that it joins with arrangements differential makes), over a [`KeyExchange`];
/// `name` is the operator's in timely's logs and dataflow graphs.
pub(crate) fn arrange_by_key<'s, V>(
    collection: VecCollection<'s, u64, (Key, V), isize>,
    name: &str,
) -> Arranged<'s, TraceAgent<ValSpine<Key, V, u64, isize>>>
where
    V: differential_dataflow::ExchangeData,
{
    let route = KeyExchange::new(|u: &((Key, V), u64, isize)| (u.0).0.hashed());
    arrange_core::<_, _, ValBatcher<Key, V, u64, isize>, ValSpine<Key, V, u64, isize>>(
        collection.inner,
        route,
        name,
        ValBatcher::new,
    )
}
