//! Two executors joined into one timely computation over loopback TCP, as two processes of a
//! cluster are: each is appended half of the series (and some series by both), and each
//! reads and follows (by subscription) the whole of every view, equal to that of one executor
//! appended all of them once. Each executor has its own table of
//! label sets, so a key that crosses between them must bring its labels along.

use std::collections::{BTreeMap, HashMap};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use promflow_config::cluster_secret::ClusterSecret;
use promflow_incremental::cluster::{connect, Credentials, Handshake};
use promflow_incremental::{Incremental, SeriesOwner, Value};
use promflow_storage::Labels;

const LOOKBACK: i64 = 300_000;

/// Views whose elements are computed from series of both halves: aggregations, joins across
/// the halves, a subquery, `topk` and a classic histogram's quantile; and a window function
/// per series. `rate(x[2m])` comes after the sum that arranges it on the way: its read copies
/// are then built apart from the dataflow that builds the arrangement, the others' in it.
const VIEWS: &[&str] = &[
    "sum by (job) (x)",
    "count(x)",
    "sum by (job) (rate(x[2m]))",
    "rate(x[2m])",
    "max_over_time(x[3m:30s])",
    "topk by (job) (2, x)",
    "x / ignoring(i) group_left sum by (job) (x)",
    "label_replace(x, \"k\", \"$1\", \"job\", \"j(.)\") > 100",
    "histogram_quantile(0.5, sum by (le) (label_replace(x, \"le\", \"$1\", \"job\", \"j(.)\")))",
];

/// 24 series over 15 minutes, each every 15 s, in time order.
fn samples() -> Vec<(Labels, i64, f64)> {
    let mut out = Vec::new();
    for i in 0..24i64 {
        let labels = Labels::from_pairs([
            ("__name__", "x".to_string()),
            ("job", format!("j{}", i % 4)),
            ("i", i.to_string()),
        ]);
        for k in 0..60 {
            let t = k * 15_000 + i * 100;
            out.push((labels.clone(), t, ((k + 1) * (i + 1)) as f64 * 3.5));
        }
    }
    out.sort_by_key(|s| s.1);
    out
}

/// Listeners on free loopback ports, with their addresses.
fn listeners(n: usize) -> (Vec<TcpListener>, Vec<String>) {
    let listeners: Vec<TcpListener> = (0..n).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    let addresses = listeners.iter().map(|l| l.local_addr().unwrap().to_string()).collect();
    (listeners, addresses)
}

/// The cluster's secret as the server wires it into the set-up.
struct Secret(ClusterSecret);

impl Credentials for Secret {
    fn prove(&self, parts: &[&[u8]]) -> [u8; 32] {
        self.0.prove(parts)
    }
    fn verify(&self, parts: &[&[u8]], proof: &[u8]) -> bool {
        self.0.verify(parts, proof)
    }
}

/// Connects the processes at `places` (each with its fingerprint) at once, as their
/// servers would, each giving up after `patience`: what each one's set-up returned.
fn connect_all(
    listeners: &[TcpListener],
    addresses: &[String],
    places: &[(usize, u64)],
    patience: Duration,
) -> Vec<Option<Vec<Option<TcpStream>>>> {
    connect_with_secrets(listeners, addresses, places, &vec![None; places.len()], patience)
}

/// [`connect_all`], each process with its secret (`None`: without).
fn connect_with_secrets(
    listeners: &[TcpListener],
    addresses: &[String],
    places: &[(usize, u64)],
    secrets: &[Option<&str>],
    patience: Duration,
) -> Vec<Option<Vec<Option<TcpStream>>>> {
    std::thread::scope(|s| {
        let joins: Vec<_> = places
            .iter()
            .zip(secrets)
            .map(|(&(index, fingerprint), secret)| {
                let me = Handshake { index, processes: addresses.len(), workers: 2, fingerprint };
                let deadline = Instant::now() + patience;
                let secret = secret.map(|k| Secret(ClusterSecret::new(k.as_bytes().to_vec()).unwrap()));
                s.spawn(move || {
                    let credentials = secret.as_ref().map(|c| c as &dyn Credentials);
                    connect(&listeners[index], addresses, me, credentials, &|| Instant::now() > deadline)
                        .unwrap()
                })
            })
            .collect();
        joins.into_iter().map(|j| j.join().unwrap()).collect()
    })
}

/// The number of a series of [`samples`] (its label `i`).
fn series_number(labels: &Labels) -> usize {
    labels.get("i").parse().expect("a series of the samples")
}

/// The process that owns a series of [`samples`] by its key, as a cluster's placement names
/// it: the one the tests append it to, process `i` modulo 2.
fn owner_of_series() -> SeriesOwner {
    let owners: HashMap<u64, usize> =
        samples().iter().map(|(l, _, _)| (l.prometheus_hash(), series_number(l) % 2)).collect();
    Arc::new(move |key| owners.get(&key).copied().unwrap_or(0))
}

/// Starts the executors of the processes at `places` over their connections.
fn start_all(places: &[usize], sockets: Vec<Option<Vec<Option<TcpStream>>>>) -> Vec<Incremental> {
    places
        .iter()
        .zip(sockets)
        .map(|(&index, s)| {
            Incremental::start_in_cluster(2, s.expect("connected"), index, owner_of_series(), LOOKBACK)
                .unwrap()
        })
        .collect()
}

/// The executors of a computation of two processes on loopback whose views are built
/// alike (`fingerprint`), connected and started.
fn two_processes(fingerprint: u64) -> Vec<Incremental> {
    let (listeners, addresses) = listeners(2);
    let places = [(0, fingerprint), (1, fingerprint)];
    start_all(&[0, 1], connect_all(&listeners, &addresses, &places, Duration::from_secs(30)))
}

/// Shuts the executors of a computation down together (each waits for the others).
fn shutdown_all(nodes: &[Incremental]) {
    std::thread::scope(|s| {
        for n in nodes {
            s.spawn(move || n.shutdown());
        }
    });
}

fn as_map(rows: Vec<(Labels, Value)>) -> BTreeMap<Labels, u64> {
    rows.into_iter().map(|(l, v)| (l, v.as_float().expect("a float").to_bits())).collect()
}

/// Appends `all[fed..]` through time `t` to the two processes `nodes` (each series to its
/// owner, every third to both, as a series stored on two nodes is: it still counts once) and
/// to `one`, and completes `t` on both processes (a read waits for every process to pass
/// it); returns how many are appended.
fn append_through(
    nodes: &[Incremental],
    one: &Incremental,
    all: &[(Labels, i64, f64)],
    fed: usize,
    t: i64,
) -> usize {
    let upto = all.iter().position(|s| s.1 > t).unwrap_or(all.len());
    for (labels, ts, v) in &all[fed..upto] {
        let i = series_number(labels);
        nodes[i % 2].append(&[(labels.clone(), *ts, *v)]);
        if i.is_multiple_of(3) {
            nodes[1 - i % 2].append(&[(labels.clone(), *ts, *v)]);
        }
        one.append(&[(labels.clone(), *ts, *v)]);
    }
    for n in nodes {
        n.complete(t);
    }
    upto
}

#[test]
fn two_processes_compute_one_view() {
    // each set-up waits for the other: both at once
    let nodes = two_processes(7);
    let one = Incremental::start(2, LOOKBACK).unwrap();
    let mut views = Vec::new();
    // every process follows every view by subscription too, as a client of it would
    let mut followed = Vec::new();
    for q in VIEWS {
        let plan = promflow_promql::compile(q, &Default::default()).unwrap();
        let ids: Vec<usize> = nodes.iter().map(|n| n.install(&plan).unwrap()).collect();
        for (i, (n, id)) in nodes.iter().zip(&ids).enumerate() {
            followed.push((q, i, n.subscribe(*id, 0, None).unwrap(), HashMap::new(), views.len()));
        }
        views.push((q, ids, one.install(&plan).unwrap()));
    }
    let all = samples();
    let mut fed = 0;
    for t in (60_000..=900_000).step_by(60_000) {
        fed = append_through(&nodes, &one, &all, fed, t);
        let mut wanted = Vec::new();
        for (q, ids, single) in &views {
            let want = as_map(one.read(*single, t).unwrap());
            assert!(!want.is_empty(), "{q} at {t}: empty");
            for (i, (n, id)) in nodes.iter().zip(ids).enumerate() {
                assert_eq!(as_map(n.read(*id, t).unwrap()), want, "{q} at {t}, process {i}");
            }
            wanted.push(want);
        }
        for (q, i, sub, content, view) in followed.iter_mut() {
            sub.follow_through(t, content, Duration::from_secs(30)).unwrap();
            let got = as_map(content.iter().map(|(l, v)| (l.clone(), v.clone())).collect());
            assert_eq!(got, wanted[*view], "{q} at {t}, followed in process {i}");
        }
    }
    for (_, i, sub, _, _) in &followed {
        nodes[*i].unsubscribe(sub);
    }
    shutdown_all(&nodes);
}

/// Clients' views in the hub of the process they are read on: the other process sends that
/// hub the samples it is appended, so the view follows every series (a series appended by
/// both counting once) as one executor's dataflow view does, and only there can it be
/// subscribed to. The same query read on both processes is in both hubs, each with nodes of
/// its own; uninstalled on both, every node is gone.
#[test]
fn a_hub_view_follows_the_series_of_every_process() {
    let nodes = two_processes(11);
    let one = Incremental::start(2, LOOKBACK).unwrap();
    let hub_views =
        ["sum by (job) (x)", "count(x > 100)", "sum by (job) (rate(x[2m]))", "x * 2", "max_over_time(x[3m])"];
    let mut installed = Vec::new();
    let mut followed = Vec::new();
    for q in hub_views {
        let plan = promflow_promql::compile(q, &Default::default()).unwrap();
        let single = one.install(&plan).unwrap();
        for home in [1, 0] {
            // installed by both, in the same order (a cluster's sequenced log), read on `home`
            let ids: Vec<usize> =
                nodes.iter().map(|n| n.install_hub(&plan, None, Some(home)).unwrap()).collect();
            let elsewhere = &nodes[1 - home];
            assert!(
                elsewhere.subscribe(ids[1 - home], 0, None).is_err(),
                "{q}: subscribed to on the process that does not hold it"
            );
            let sub = nodes[home].subscribe(ids[home], 0, None).unwrap();
            followed.push((q, home, sub, HashMap::new(), single));
            installed.push(ids);
        }
    }
    assert!(nodes.iter().all(|n| n.hub_nodes() > 0));
    let all = samples();
    let mut fed = 0;
    for t in (60_000..=900_000).step_by(60_000) {
        fed = append_through(&nodes, &one, &all, fed, t);
        for (q, home, sub, content, single) in followed.iter_mut() {
            let want = as_map(one.read(*single, t).unwrap());
            assert!(!want.is_empty(), "{q} at {t}: empty");
            sub.follow_through(t, content, Duration::from_secs(30)).unwrap();
            let got = as_map(content.iter().map(|(l, v)| (l.clone(), v.clone())).collect());
            assert_eq!(got, want, "{q} at {t}, read on process {home}");
        }
    }
    for (_, home, sub, _, _) in &followed {
        nodes[*home].unsubscribe(sub);
    }
    for ids in &installed {
        for (n, id) in nodes.iter().zip(ids) {
            n.uninstall(*id);
        }
    }
    assert!(nodes.iter().all(|n| n.hub_nodes() == 0), "hub nodes left after every view is gone");
    shutdown_all(&nodes);
}

/// Each process installs a view when it takes the log's entry: one that is ahead sends the
/// home its rows before the home has built the view's leaves. They wait there for it, and
/// the view is still the one executor's.
#[test]
fn rows_that_reach_a_hub_before_its_view_wait_for_it() {
    let nodes = two_processes(12);
    let one = Incremental::start(2, LOOKBACK).unwrap();
    let plan = promflow_promql::compile("sum by (job) (max_over_time(x[3m]))", &Default::default()).unwrap();
    let single = one.install(&plan).unwrap();
    // process 0 installs the view read on process 1, and sends it the samples it is given
    let early = nodes[0].install_hub(&plan, None, Some(1)).unwrap();
    let all = samples();
    let upto = all.iter().position(|s| s.1 > 120_000).unwrap_or(all.len());
    for (labels, t, v) in all[..upto].iter().filter(|s| series_number(&s.0).is_multiple_of(2)) {
        nodes[0].append(&[(labels.clone(), *t, *v)]);
    }
    nodes[0].advance(1);
    std::thread::sleep(Duration::from_millis(300));
    // only then process 1, which is given its own series
    let late = nodes[1].install_hub(&plan, None, Some(1)).unwrap();
    for (labels, t, v) in all[..upto].iter().filter(|s| !series_number(&s.0).is_multiple_of(2)) {
        nodes[1].append(&[(labels.clone(), *t, *v)]);
    }
    for (labels, t, v) in &all[..upto] {
        one.append(&[(labels.clone(), *t, *v)]);
    }
    let mut sub = nodes[1].subscribe(late, 0, None).unwrap();
    let mut content = HashMap::new();
    let mut fed = upto;
    for t in (120_000..=600_000).step_by(60_000) {
        fed = append_through(&nodes, &one, &all, fed, t);
        let want = as_map(one.read(single, t).unwrap());
        sub.follow_through(t, &mut content, Duration::from_secs(30)).unwrap();
        let got = as_map(content.iter().map(|(l, v)| (l.clone(), v.clone())).collect());
        assert_eq!(got, want, "at {t}");
    }
    nodes[1].unsubscribe(&sub);
    nodes[0].uninstall(early);
    nodes[1].uninstall(late);
    shutdown_all(&nodes);
}

/// A hub's events (a window's oldest sample leaving it) are known on its process alone, and
/// complete once every process's clock has passed them: while another process's hub holds a
/// view, a process takes an event to be due now and moves its clock as often as for events
/// of its own; once the view is gone, it waits for its own again.
#[test]
fn a_process_moves_its_clock_for_the_events_of_another_process_hub() {
    let nodes = two_processes(13);
    assert_eq!(nodes[0].next_event(), None);
    let plan = promflow_promql::compile("max_over_time(x[3m])", &Default::default()).unwrap();
    let ids: Vec<usize> = nodes.iter().map(|n| n.install_hub(&plan, None, Some(1)).unwrap()).collect();
    assert!(nodes[0].next_event().is_some_and(|t| t <= 0), "no event due for the other process's hub");
    assert_eq!(nodes[1].next_event(), None, "the hub's own process waits for its own events");
    for (n, id) in nodes.iter().zip(&ids) {
        n.uninstall(*id);
    }
    assert_eq!(nodes[0].next_event(), None);
    shutdown_all(&nodes);
}

/// Series that stopped a while ago: `rate`'s extrapolation is cut short at the window's end,
/// so its value moves with time alone, at the clock's ticks. Only the process that reads
/// ticks (the server's other processes move their clocks without ticking), and the series
/// kept on the other process's workers must move at its ticks too.
#[test]
fn values_that_move_with_time_move_on_every_process_at_a_readers_ticks() {
    let nodes = two_processes(10);
    let one = Incremental::start(2, LOOKBACK).unwrap();
    let mut views = Vec::new();
    for q in ["rate(x[2m])", "sum by (job) (rate(x[2m]))", "sum(predict_linear(x[2m], 60))"] {
        let plan = promflow_promql::compile(q, &Default::default()).unwrap();
        views.push((q, nodes[0].install(&plan).unwrap(), one.install(&plan).unwrap()));
        nodes[1].install(&plan).unwrap();
    }
    for (labels, t, v) in samples().iter().filter(|s| s.1 <= 300_000) {
        nodes[series_number(labels) % 2].append(&[(labels.clone(), *t, *v)]);
        one.append(&[(labels.clone(), *t, *v)]);
    }
    for t in (320_000..=400_000).step_by(10_000) {
        nodes[1].advance(t + 1);
        for (q, id, single) in &views {
            let want = as_map(one.read(*single, t).unwrap());
            assert!(!want.is_empty(), "{q} at {t}: empty");
            assert_eq!(as_map(nodes[0].read(*id, t).unwrap()), want, "{q} at {t}");
        }
    }
    shutdown_all(&nodes);
}

/// A series appended by the process that owns it is kept there: the other process never
/// enters its labels, only the groups an aggregation over it makes, and the view is the one
/// executor's.
#[test]
fn a_series_stays_on_the_process_that_owns_it() {
    let nodes = two_processes(8);
    let one = Incremental::start(2, LOOKBACK).unwrap();
    let plan = promflow_promql::compile("sum by (job) (rate(x[2m]))", &Default::default()).unwrap();
    let ids: Vec<usize> = nodes.iter().map(|n| n.install(&plan).unwrap()).collect();
    let single = one.install(&plan).unwrap();
    let mut own = [0usize; 2];
    let all = samples();
    for (labels, t, v) in &all {
        nodes[series_number(labels) % 2].append(&[(labels.clone(), *t, *v)]);
        one.append(&[(labels.clone(), *t, *v)]);
    }
    for (labels, _, _) in all.iter().filter(|(_, t, _)| *t < 15_000) {
        own[series_number(labels) % 2] += 1;
    }
    let t = 900_000;
    for n in &nodes {
        n.complete(t);
    }
    let want = as_map(one.read(single, t).unwrap());
    assert_eq!(want.len(), 4, "{want:?}");
    for (p, (n, id)) in nodes.iter().zip(&ids).enumerate() {
        assert_eq!(as_map(n.read(*id, t).unwrap()), want, "process {p}");
        // its series, their rates (named otherwise), and the four jobs' sums
        let most = 2 * own[p] + want.len();
        assert!(
            n.label_sets() <= most,
            "process {p} holds {} label sets, at most {most} its own",
            n.label_sets()
        );
    }
    shutdown_all(&nodes);
}

/// Entries proposed on both processes at once come out of the sequenced log on each, all of
/// them, in one order: what lets processes install views at times of their own choosing and
/// still build the same dataflows in the same order.
#[test]
fn every_process_reads_the_sequenced_log_in_one_order() {
    let nodes = two_processes(9);
    let logs: Vec<_> = nodes.iter().map(|n| n.sequenced().expect("a cluster's log")).collect();
    assert!(nodes[0].sequenced().is_none(), "the log is taken once");
    let per_process = 50u8;
    std::thread::scope(|s| {
        for (p, n) in nodes.iter().enumerate() {
            s.spawn(move || {
                for k in 0..per_process {
                    n.propose(vec![p as u8, k]).unwrap();
                    if k % 10 == 0 {
                        std::thread::sleep(Duration::from_millis(3));
                    }
                }
            });
        }
    });
    let read: Vec<Vec<Vec<u8>>> = logs
        .iter()
        .map(|log| {
            (0..2 * per_process)
                .map(|_| log.recv_timeout(Duration::from_secs(30)).expect("an entry"))
                .collect()
        })
        .collect();
    assert_eq!(read[0], read[1], "the two processes read the log in different orders");
    for p in 0..2u8 {
        // each process's own entries keep the order it proposed them in
        let own: Vec<u8> = read[0].iter().filter(|e| e[0] == p).map(|e| e[1]).collect();
        assert_eq!(own, (0..per_process).collect::<Vec<_>>(), "process {p}");
    }
    assert!(Incremental::start(1, LOOKBACK).unwrap().propose(vec![1]).is_err(), "a log in one process");
    shutdown_all(&nodes);
}

#[test]
fn processes_that_would_build_other_views_do_not_connect() {
    let (listeners, addresses) = listeners(2);
    let sockets = connect_all(&listeners, &addresses, &[(0, 1), (1, 2)], Duration::from_secs(3));
    assert!(sockets.iter().all(Option::is_none), "processes with other fingerprints connected");
}

#[test]
fn only_processes_with_the_same_secret_connect() {
    let (listeners, addresses) = listeners(2);
    let same = Some("a secret of 24 characters");
    let places = [(0, 4), (1, 4)];
    let sockets =
        connect_with_secrets(&listeners, &addresses, &places, &[same, same], Duration::from_secs(30));
    assert!(sockets.iter().all(Option::is_some), "processes with the same secret did not connect");
    for secrets in [[same, Some("another secret of 24 chars")], [same, None], [None, same]] {
        let sockets = connect_with_secrets(&listeners, &addresses, &places, &secrets, Duration::from_secs(3));
        assert!(sockets.iter().all(Option::is_none), "{secrets:?} connected");
    }
}

#[test]
fn a_process_without_the_secret_cannot_pose_as_one() {
    use std::io::{Read, Write};
    let (listeners, addresses) = listeners(2);
    let secret = Some("a secret of 24 characters");
    std::thread::scope(|s| {
        // process 0 waits for process 1, which never comes: an impostor dials in its place
        let waiting = s.spawn(|| {
            connect_with_secrets(&listeners, &addresses, &[(0, 4)], &[secret], Duration::from_secs(8))
        });
        // the impostor copies an introduction that says it proves credentials, and answers
        // the challenge with bytes of its own
        let mut intro = Vec::from(*b"pfdflow2");
        for v in [1u64, 2, 2, 4, 1] {
            intro.extend_from_slice(&v.to_le_bytes());
        }
        intro.extend_from_slice(&[9u8; 16]);
        let mut refused = false;
        let deadline = Instant::now() + Duration::from_secs(6);
        while !refused && Instant::now() < deadline {
            let Ok(mut c) = TcpStream::connect(&addresses[0]) else { continue };
            c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            c.write_all(&intro).unwrap();
            let mut answer = [0u8; 1 + 16 + 32];
            if c.read_exact(&mut answer).is_err() {
                continue;
            }
            // the answer's first byte is agreement on the introduction; the proof follows
            c.write_all(&[0u8; 32]).unwrap();
            let mut last = [0u8; 1];
            // the answer to a wrong proof: 2, the byte for "differs"
            refused = c.read_exact(&mut last).is_ok_and(|()| last[0] == 2);
        }
        assert!(refused, "a forged proof was taken");
        assert!(waiting.join().unwrap()[0].is_none());
    });
}

#[test]
fn silent_and_foreign_connections_do_not_hold_up_the_set_up() {
    use std::io::Write;
    let (listeners, addresses) = listeners(2);
    // before the processes start: three connections that say nothing, and one that speaks
    // another protocol
    let silent: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(&addresses[0]).unwrap()).collect();
    let mut foreign = TcpStream::connect(&addresses[0]).unwrap();
    foreign.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
    let started = Instant::now();
    let sockets = connect_all(&listeners, &addresses, &[(0, 3), (1, 3)], Duration::from_secs(60));
    assert!(sockets.iter().all(Option::is_some), "the processes did not connect");
    // each silent connection costs the set-up at most the handshake's 2 s
    assert!(started.elapsed() < Duration::from_secs(30), "took {:?}", started.elapsed());
    drop(silent);
}

#[test]
fn a_lost_process_fails_the_others_and_they_connect_again() {
    let (listeners, addresses) = listeners(3);
    let patience = Duration::from_secs(30);
    let places = [(0, 5), (1, 5), (2, 5)];
    let mut sockets = connect_all(&listeners, &addresses, &places, patience);
    // process 2's connections, to break them as a killed process's break
    let process_2: Vec<TcpStream> =
        sockets[2].as_ref().unwrap().iter().flatten().map(|s| s.try_clone().unwrap()).collect();
    let nodes = start_all(&[0, 1, 2], std::mem::take(&mut sockets));
    let plan = promflow_promql::compile("sum(x)", &Default::default()).unwrap();
    for n in &nodes {
        n.install(&plan).unwrap();
    }
    assert!(nodes.iter().all(|n| !n.lost()));
    for s in &process_2 {
        s.shutdown(std::net::Shutdown::Both).unwrap();
    }
    // every process notices at its next message (a clock move)
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut t = 0;
    while !nodes.iter().all(Incremental::lost) {
        assert!(Instant::now() < deadline, "the loss of a process went unnoticed");
        t += 1_000;
        for n in &nodes {
            n.complete(t);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // they leave their computation, and all three form a new one
    shutdown_all(&nodes);
    drop(nodes);
    let nodes = start_all(&[0, 1, 2], connect_all(&listeners, &addresses, &places, patience));
    let labels = |i: usize| Labels::from_pairs([("__name__", "x".to_string()), ("i", i.to_string())]);
    let ids: Vec<usize> = nodes.iter().map(|n| n.install(&plan).unwrap()).collect();
    for (i, n) in nodes.iter().enumerate() {
        n.append(&[(labels(i), 1_000, (i + 1) as f64)]);
    }
    for n in &nodes {
        n.complete(2_000);
    }
    for (n, id) in nodes.iter().zip(ids) {
        let rows = n.read(id, 2_000).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].1.as_float(), Some(6.0), "the new computation sums every process's series");
    }
    shutdown_all(&nodes);
}
