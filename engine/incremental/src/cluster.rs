//! How the processes of a cluster's computation connect before timely takes their sockets.
//!
//! timely's own set-up (`CommunicationConfig::Cluster`) connects every process to every
//! other and starts at once: it cannot be stopped while it waits, it prints to standard
//! output every second, and it accepts any process that connects, whatever it was built to
//! compute. A promflow process joins a computation only with processes that will build the
//! same dataflows in the same order, and a server must be able to give up waiting. So
//! [`connect`] does the set-up here and hands timely connected sockets:
//!
//! - as in timely, each process dials the processes before it in the list and accepts the
//!   ones after it;
//! - the dialler introduces itself ([`Handshake`]: its place, the number of processes and
//!   of workers, and a fingerprint of what it will install); the other side answers whether
//!   it agrees, and a process that does not is turned away;
//! - with [`Credentials`] (the cluster's shared secret), each side then answers the other's
//!   random challenge with a proof that it holds them, and a process without is turned away;
//! - once a process holds a connection to every other, it sends each a ready byte, and it
//!   returns when it has received one from each. A process therefore starts only with
//!   processes that are all connected; a connection that breaks before then is dialled or
//!   accepted again.
//!
//! A process that dies after its ready byte leaves the others a dead connection: their
//! computation fails at its first message ([`crate::Incremental::lost`]) and they connect
//! again.
//!
//! timely runs over plain TCP sockets. With a [`Tunnel`] (TLS, which the server provides),
//! each connection, once set up, is carried in it, and timely is given the stream the tunnel
//! hands back.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use promflow_storage::MetricsWriter;

use crate::live::{self, LiveViews};
use crate::{Incremental, SeriesOwner};

thread_local! {
    /// Whether this thread is unwinding from a panic with which timely stopped it
    /// ([`stop_thread_on_connection_loss`]).
    static STOPPING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The threads [`stop_thread_on_connection_loss`] parked for good.
static PARKED: Mutex<Vec<std::thread::ThreadId>> = Mutex::new(Vec::new());

/// For the process's panic hook, at each panic with which timely stops a thread of a failed
/// computation (a connection to another process lost, a queue poisoned by a thread that
/// stopped so): the first lets the thread unwind and stop. A second on the same thread
/// comes from a destructor while it unwinds (an operator's output flushing into a poisoned
/// queue), and a panic in a destructor during unwinding aborts the whole process, its
/// storage and ingest included; so the thread parks for good instead, and leaks what it
/// has not dropped yet. [`Incremental::lost`] counts a parked worker as stopped. The parked
/// thread keeps the panic hook's lock for reading: other threads' panics still run the hook,
/// but `std::panic::set_hook` and `take_hook` would wait for good, so the hook must be set
/// once, at start-up.
pub fn stop_thread_on_connection_loss() {
    if STOPPING.with(|s| s.replace(true)) {
        PARKED.lock().unwrap_or_else(|e| e.into_inner()).push(std::thread::current().id());
        loop {
            std::thread::park();
        }
    }
}

/// Whether [`stop_thread_on_connection_loss`] parked the thread `id`.
pub fn parked(id: std::thread::ThreadId) -> bool {
    PARKED.lock().unwrap_or_else(|e| e.into_inner()).contains(&id)
}

/// The first bytes of a dialler's introduction (and of the protocol's version).
const MAGIC: &[u8; 8] = b"pfdflow2";

/// The bytes of an introduction: [`MAGIC`], four fields, whether the dialler proves
/// [`Credentials`], and its challenge.
const INTRODUCTION: usize = 48 + CHALLENGE;

/// The bytes of a random challenge.
const CHALLENGE: usize = 16;

/// The bytes of a proof ([`Credentials::prove`]).
const PROOF: usize = 32;

/// The answer to an introduction the process agrees with.
const AGREED: u8 = 1;

/// The answer to an introduction that differs from the process's own.
const DIFFERS: u8 = 2;

/// The byte a process sends each other once it is connected to all of them.
const READY: u8 = 3;

/// How long a dial, and an introduction with its answer, may take: a process answers at
/// once, and the set-up waits no longer on a connection that does not.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

/// How soon a process that did not answer, or disagreed, is dialled again.
const REDIAL: Duration = Duration::from_millis(500);

/// How long the set-up sleeps when nothing happened.
const IDLE: Duration = Duration::from_millis(50);

/// What a process tells the others it connects to: all of it must match theirs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handshake {
    /// The process's place in the list of addresses.
    pub index: usize,
    /// How many processes the computation has.
    pub processes: usize,
    /// How many workers each process runs (timely numbers workers by process).
    pub workers: usize,
    /// A digest of what the processes will install, in order: processes that would build
    /// different dataflows must not join one computation.
    pub fingerprint: u64,
}

/// What proves to the other processes that this one belongs to the cluster, and checks
/// their proofs: the cluster's shared secret, which the server wires in (a keyed digest).
pub trait Credentials: Send + Sync {
    /// The proof of `parts`, which only a holder of the credentials can make.
    fn prove(&self, parts: &[&[u8]]) -> [u8; 32];
    /// Whether `proof` is the proof of `parts` (compared in constant time).
    fn verify(&self, parts: &[&[u8]], proof: &[u8]) -> bool;
}

/// What a dialler proves ([`Credentials::prove`]): this label, its introduction, and both
/// challenges. The side that answers proves [`ANSWERER`], its own place, and the same:
/// neither proof can be replayed for the other side or on another connection, and a process
/// cannot answer for another place.
const DIALLER: &[u8] = b"promflow dataflow dialler";

/// What the side that answers proves, in place of [`DIALLER`].
const ANSWERER: &[u8] = b"promflow dataflow answerer";

/// A fresh random challenge.
fn challenge() -> io::Result<[u8; CHALLENGE]> {
    let mut c = [0u8; CHALLENGE];
    getrandom::fill(&mut c).map_err(|e| io::Error::other(format!("no random challenge: {e}")))?;
    Ok(c)
}

impl Handshake {
    /// The introduction: this handshake, whether it comes with a proof, and `challenge`.
    fn encode(&self, proves: bool, challenge: &[u8; CHALLENGE]) -> [u8; INTRODUCTION] {
        let mut out = [0u8; INTRODUCTION];
        out[..8].copy_from_slice(MAGIC);
        let fields = [self.index as u64, self.processes as u64, self.workers as u64, self.fingerprint];
        for (i, v) in fields.into_iter().chain([u64::from(proves)]).enumerate() {
            out[8 + i * 8..16 + i * 8].copy_from_slice(&v.to_le_bytes());
        }
        out[48..].copy_from_slice(challenge);
        out
    }

    /// The handshake, whether a proof comes with it, and the challenge, of an introduction.
    fn decode(bytes: &[u8; INTRODUCTION]) -> Option<(Handshake, bool, [u8; CHALLENGE])> {
        if &bytes[..8] != MAGIC {
            return None;
        }
        let field = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[8 + i * 8..16 + i * 8]);
            u64::from_le_bytes(b)
        };
        let mut challenge = [0u8; CHALLENGE];
        challenge.copy_from_slice(&bytes[48..]);
        let handshake = Handshake {
            index: usize::try_from(field(0)).ok()?,
            processes: usize::try_from(field(1)).ok()?,
            workers: usize::try_from(field(2)).ok()?,
            fingerprint: field(3),
        };
        Some((handshake, field(4) == 1, challenge))
    }

    /// Whether `other`, another process's introduction, belongs to the same computation.
    fn agrees(&self, other: &Handshake) -> bool {
        other.index != self.index
            && other.index < self.processes
            && other.processes == self.processes
            && other.workers == self.workers
            && other.fingerprint == self.fingerprint
    }
}

/// A connection to another process during the set-up.
struct Link {
    stream: TcpStream,
    sent_ready: bool,
    got_ready: bool,
}

/// How many connections the set-up accepts between two looks at the rest of its work: a
/// flood of connections on the dataflow port delays the set-up, without stopping it.
const ACCEPTS_AT_ONCE: usize = 8;

/// How long a connection may stay silent before its process counts as lost: a process cut
/// off without a word (a partition, a frozen machine) is noticed after about this long.
const SILENCE_LIMIT: Duration = Duration::from_secs(15);

/// Connects this process (`me`) to every other process at `addresses` (the same list, in the
/// same order, in every process; `listener` is bound at this process's address), and
/// returns one socket for each other process by its place, `None` at this one's. With
/// `credentials`, only processes that prove the same credentials are connected. Returns
/// `Ok(None)` once `stop` says to give up.
pub fn connect(
    listener: &TcpListener,
    addresses: &[String],
    me: Handshake,
    credentials: Option<&dyn Credentials>,
    stop: &dyn Fn() -> bool,
) -> io::Result<Option<Vec<Option<TcpStream>>>> {
    if me.index >= addresses.len() || me.processes != addresses.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "this process is not in the list of addresses",
        ));
    }
    listener.set_nonblocking(true)?;
    let mut links: Vec<Option<Link>> = (0..addresses.len()).map(|_| None).collect();
    let mut next_dial: Vec<Instant> = vec![Instant::now(); addresses.len()];
    let mut last_complaint: Vec<Option<String>> = vec![None; addresses.len()];
    let mut last_turned_away: Option<String> = None;
    loop {
        if stop() {
            return Ok(None);
        }
        let mut progressed = false;
        for (j, address) in addresses.iter().enumerate().take(me.index) {
            if links[j].is_some() || Instant::now() < next_dial[j] {
                continue;
            }
            match dial(address, j, &me, credentials) {
                Ok(stream) => {
                    set_link(&mut links, j, stream);
                    last_complaint[j] = None;
                    progressed = true;
                }
                Err(e) => {
                    next_dial[j] = Instant::now() + REDIAL;
                    complain(&mut last_complaint[j], j, &e);
                }
            }
        }
        for _ in 0..ACCEPTS_AT_ONCE {
            if stop() {
                return Ok(None);
            }
            match listener.accept() {
                Ok((stream, from)) => match answer(stream, &me, credentials) {
                    Ok((j, stream)) => {
                        // a process that connects again replaces its old connection
                        set_link(&mut links, j, stream);
                        progressed = true;
                    }
                    Err(e) => {
                        let why = e.to_string();
                        if last_turned_away.as_deref() != Some(why.as_str()) {
                            tracing::warn!(%from, error = %why, "turned away a dataflow connection");
                            last_turned_away = Some(why);
                        }
                    }
                },
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a dataflow connection");
                    break;
                }
            }
        }
        let all_connected = (0..links.len()).all(|j| j == me.index || links[j].is_some());
        for j in 0..links.len() {
            let Some(link) = links[j].as_mut() else { continue };
            let mut broke = false;
            if all_connected && !link.sent_ready {
                broke = link.stream.write_all(&[READY]).is_err();
                link.sent_ready = !broke;
                progressed = true;
            }
            if !broke && !link.got_ready {
                match poll_ready(&link.stream) {
                    Ok(got) => {
                        link.got_ready = got;
                        progressed |= got;
                    }
                    Err(_) => broke = true,
                }
            } else if !broke {
                // the other process may have started on it already: look without reading
                broke = !still_open(&link.stream);
            }
            if broke {
                // the process went away: dial it again, or wait for it to dial
                drop_link(&mut links, j);
                next_dial[j] = Instant::now();
            }
        }
        let done = (0..links.len())
            .all(|j| j == me.index || links[j].as_ref().is_some_and(|l| l.sent_ready && l.got_ready));
        if done {
            let mut sockets = Vec::with_capacity(links.len());
            for link in links {
                sockets.push(match link {
                    Some(l) => Some(for_timely(l.stream)?),
                    None => None,
                });
            }
            return Ok(Some(sockets));
        }
        if !progressed {
            std::thread::sleep(IDLE);
        }
    }
}

/// Takes `stream` as the connection to process `j`. Once this process has told any other
/// that it is ready, a connection that is replaced starts the round over ([`drop_link`]).
fn set_link(links: &mut [Option<Link>], j: usize, stream: TcpStream) {
    if links[j].is_some() {
        drop_link(links, j);
    }
    links[j] = Some(Link { stream, sent_ready: false, got_ready: false });
}

/// Drops the connection to process `j`. Before this process has told any other it is ready,
/// that is all; after, every connection is closed and the round starts over: a process that
/// had every ready byte may have started already, and must fail at once (its connection
/// closes) rather than run without a process that will not join it.
fn drop_link(links: &mut [Option<Link>], j: usize) {
    let told = links.iter().flatten().any(|l| l.sent_ready);
    for (i, link) in links.iter_mut().enumerate() {
        if i == j || told {
            if let Some(l) = link.take() {
                let _ = l.stream.shutdown(std::net::Shutdown::Both);
            }
        }
    }
}

/// Readies a connection for timely: blocking, without the set-up's timeouts, and with TCP
/// keepalive and a limit on unacknowledged sends, so that a process cut off without a word
/// fails the computation after about [`SILENCE_LIMIT`] (a process that dies closes its
/// connections, which fails it at once).
fn for_timely(stream: TcpStream) -> io::Result<TcpStream> {
    stream.set_read_timeout(None)?;
    stream.set_write_timeout(None)?;
    stream.set_nonblocking(false)?;
    let socket = socket2::SockRef::from(&stream);
    let probes = socket2::TcpKeepalive::new()
        .with_time(SILENCE_LIMIT / 3)
        .with_interval(SILENCE_LIMIT / 6)
        .with_retries(4);
    socket.set_tcp_keepalive(&probes)?;
    #[cfg(target_os = "linux")]
    socket.set_tcp_user_timeout(Some(SILENCE_LIMIT))?;
    Ok(stream)
}

/// Dials process `place` at `address` and introduces this one; with `credentials`, checks the
/// other's proof (which names its place, so that another process of the cluster cannot
/// answer for it through a relay) and proves this process's.
fn dial(
    address: &str,
    place: usize,
    me: &Handshake,
    credentials: Option<&dyn Credentials>,
) -> io::Result<TcpStream> {
    let target = address.to_socket_addrs()?.next().ok_or_else(|| {
        io::Error::new(io::ErrorKind::NotFound, format!("{address} resolves to no address"))
    })?;
    let mut stream = TcpStream::connect_timeout(&target, HANDSHAKE_TIMEOUT)?;
    // the other process answers once it gets to this connection: after at most a round of
    // accepts ahead of it
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT * (ACCEPTS_AT_ONCE as u32 + 1);
    stream.set_nodelay(true)?;
    stream.set_write_timeout(Some(HANDSHAKE_TIMEOUT))?;
    let mine = challenge()?;
    let introduction = me.encode(credentials.is_some(), &mine);
    stream.write_all(&introduction)?;
    let mut answer = [0u8; 1];
    read_exact_by(&mut stream, &mut answer, deadline)?;
    if answer[0] != AGREED {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the process there runs other views, another number of workers or another list of processes, or holds other credentials",
        ));
    }
    let Some(credentials) = credentials else { return Ok(stream) };
    let mut theirs = [0u8; CHALLENGE + PROOF];
    read_exact_by(&mut stream, &mut theirs, deadline)?;
    let (their_challenge, their_proof) = theirs.split_at(CHALLENGE);
    let theirs_at = (place as u64).to_le_bytes();
    if !credentials.verify(&[ANSWERER, &theirs_at, &introduction, &mine, their_challenge], their_proof) {
        return Err(denied("the process there does not hold this cluster's secret"));
    }
    stream.write_all(&credentials.prove(&[DIALLER, &introduction, &mine, their_challenge]))?;
    read_exact_by(&mut stream, &mut answer, deadline)?;
    match answer[0] {
        AGREED => Ok(stream),
        _ => Err(denied("the process there did not take this process's proof")),
    }
}

/// An error for a process that does not prove the cluster's credentials.
fn denied(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, why.to_string())
}

/// Reads a dialler's introduction on `stream` and answers it: the dialler's place when it
/// belongs to this computation (and comes after this process in the list), and, with
/// `credentials`, proves them as well. The introduction, and with credentials the
/// dialler's proof, must arrive within [`HANDSHAKE_TIMEOUT`].
fn answer(
    mut stream: TcpStream,
    me: &Handshake,
    credentials: Option<&dyn Credentials>,
) -> io::Result<(usize, TcpStream)> {
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    stream.set_nonblocking(false)?;
    stream.set_nodelay(true)?;
    stream.set_write_timeout(Some(HANDSHAKE_TIMEOUT))?;
    let mut introduction = [0u8; INTRODUCTION];
    read_exact_by(&mut stream, &mut introduction, deadline)?;
    let Some((them, proves, their_challenge)) = Handshake::decode(&introduction) else {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "not a promflow dataflow process"));
    };
    if !me.agrees(&them) || them.index <= me.index || proves != credentials.is_some() {
        stream.write_all(&[DIFFERS])?;
        let why = if proves == credentials.is_some() {
            "runs other views, another number of workers or another list of processes"
        } else if proves {
            "holds a cluster secret, and this process none"
        } else {
            "holds no cluster secret"
        };
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("process {} {why}", them.index)));
    }
    if let Some(credentials) = credentials {
        let mine = challenge()?;
        let mine_at = (me.index as u64).to_le_bytes();
        let proof = credentials.prove(&[ANSWERER, &mine_at, &introduction, &their_challenge, &mine]);
        stream.write_all(&[AGREED])?;
        stream.write_all(&mine)?;
        stream.write_all(&proof)?;
        let mut their_proof = [0u8; PROOF];
        // within the introduction's deadline: a dialler answers at once, and a connection
        // must not hold up the set-up longer than one that never introduces itself
        read_exact_by(&mut stream, &mut their_proof, deadline)?;
        if !credentials.verify(&[DIALLER, &introduction, &their_challenge, &mine], &their_proof) {
            stream.write_all(&[DIFFERS])?;
            return Err(denied(&format!("process {} does not hold this cluster's secret", them.index)));
        }
    }
    // a dialler that gave up waiting (this process was busy with other connections) has
    // closed its end
    if !still_open(&stream) {
        return Err(io::Error::new(io::ErrorKind::ConnectionAborted, "the dialler gave up"));
    }
    stream.write_all(&[AGREED])?;
    Ok((them.index, stream))
}

/// Fills `buf` from `stream` by `deadline`, however the bytes are spread over time.
fn read_exact_by(stream: &mut TcpStream, mut buf: &mut [u8], deadline: Instant) -> io::Result<()> {
    while !buf.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "the handshake took too long"));
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(buf) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed during the handshake")),
            Ok(n) => buf = &mut buf[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Whether `stream` is still open, looked at without taking any byte from it (the other
/// process may have started sending timely's).
fn still_open(stream: &TcpStream) -> bool {
    if stream.set_nonblocking(true).is_err() {
        return false;
    }
    let mut byte = [0u8; 1];
    let open = match stream.peek(&mut byte) {
        Ok(0) => false,
        Ok(_) => true,
        Err(e) => e.kind() == io::ErrorKind::WouldBlock,
    };
    open && stream.set_nonblocking(false).is_ok()
}

/// Whether the ready byte has arrived on `stream`; an error when the connection closed.
fn poll_ready(mut stream: &TcpStream) -> io::Result<bool> {
    stream.set_nonblocking(true)?;
    let mut byte = [0u8; 1];
    let got = match stream.read(&mut byte) {
        Ok(0) => Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed")),
        Ok(_) if byte[0] == READY => Ok(true),
        Ok(_) => Err(io::Error::new(io::ErrorKind::InvalidData, "not a ready byte")),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
        Err(e) => Err(e),
    };
    stream.set_nonblocking(false)?;
    got
}

/// Logs why process `j` could not be reached, once for each new reason.
fn complain(last: &mut Option<String>, j: usize, e: &io::Error) {
    let why = e.to_string();
    if last.as_deref() != Some(why.as_str()) {
        tracing::info!(process = j, reason = %why, "waiting for a dataflow process");
        *last = Some(why);
    }
}

/// How often [`Formation`] looks whether its computation has failed.
const CHECK_EVERY: Duration = Duration::from_millis(250);

/// How long [`Formation`] waits after a failed start before connecting again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Carries a connection to another process, once set up, under the stream timely runs over
/// (a TLS session relayed to a loopback connection): given the other process's place,
/// whether this process dialled it (the other accepted), and the connection, it returns the
/// stream for timely. Closing the connection it was given must end that stream.
pub type Tunnel = Arc<dyn Fn(usize, bool, TcpStream) -> io::Result<TcpStream> + Send + Sync>;

/// What runs on a cluster's computation: the views each process installs when it forms.
pub trait Occupant: Send + Sync {
    /// A digest of the views [`Occupant::occupy`] installs, in order ([`fingerprint_of`]):
    /// the processes join only a computation whose members agree on it. When it changes (a
    /// reload changed the rules), this process leaves the computation to form it again with
    /// the new views.
    fn fingerprint(&self) -> u64;
    /// Starts the views over this process's share of a computation just formed, and
    /// installs every view, in the order every process installs them. Fails when the views
    /// no longer have `fingerprint` (the one the computation was formed with: they changed
    /// meanwhile), or when the computation fails during the installs.
    fn occupy(&self, inc: Incremental, fingerprint: u64) -> Result<Arc<LiveViews>, String>;
}

/// A digest of `value` that every process of one build computes alike.
pub fn fingerprint_of(value: impl std::hash::Hash) -> u64 {
    use std::hash::Hasher;
    let mut h = std::hash::DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}

/// A cluster's computation kept formed: a thread connects this process to the others
/// ([`connect`]), starts the executor over the connections with the occupant's views, and
/// when the computation fails (another process died or was cut off: timely stops every
/// process's workers then) leaves it and connects again, so the computation forms anew
/// once every process is back.
pub struct Formation {
    shared: Arc<Shared>,
}

struct Shared {
    current: Mutex<Option<Arc<LiveViews>>>,
    formed: AtomicU64,
    lost: AtomicU64,
    /// The views' reads in the computations before the current one.
    past_reads: AtomicU64,
    stop: AtomicBool,
}

impl Formation {
    /// Starts forming the computation of the processes at `addresses`, this one `me` (whose
    /// fingerprint the occupant's is added to), with `listener` bound at this process's
    /// address, for `occupant`, each series' samples kept on the process `owner` names
    /// (the same function on every process: `me`'s fingerprint must cover what it depends
    /// on); with `credentials`, only with processes that prove them; with `tunnel`, each
    /// connection carried in it.
    pub fn start(
        listener: TcpListener,
        addresses: Vec<String>,
        me: Handshake,
        (credentials, tunnel): (Option<Arc<dyn Credentials>>, Option<Tunnel>),
        (owner, lookback_ms): (SeriesOwner, i64),
        occupant: Arc<dyn Occupant>,
    ) -> io::Result<Formation> {
        let shared = Arc::new(Shared {
            current: Mutex::new(None),
            formed: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            past_reads: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let s = Arc::clone(&shared);
        let place = Place { listener, addresses, me, credentials, tunnel, owner, lookback_ms };
        std::thread::Builder::new()
            .name("dataflow-formation".into())
            .spawn(move || form(&s, &place, occupant.as_ref()))?;
        Ok(Formation { shared })
    }

    /// The views on the computation, while every process is in it.
    pub fn current(&self) -> Option<Arc<LiveViews>> {
        self.shared.current.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// How many times the computation has formed.
    pub fn formed(&self) -> u64 {
        self.shared.formed.load(Ordering::Relaxed)
    }

    /// Stops forming, and leaves the computation without timely's orderly shutdown, as a
    /// process that dies does: its connections close (within [`CHECK_EVERY`], or when the
    /// process exits), which fails the others' computation, and they form it again when this
    /// process is back. (An orderly shutdown would let them go on without this process's
    /// share of the data.) Does not wait: an install under way ends with the process.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.current.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// Writes `promflow_cluster_dataflow_up`, the counts of formations and losses, the
    /// threads parked ([`stop_thread_on_connection_loss`]), and the metrics of the views on
    /// the computation.
    pub fn write_metrics(&self, w: &mut MetricsWriter) {
        let current = self.current();
        w.gauge(
            "promflow_cluster_dataflow_up",
            "Whether the cluster's dataflow computation is formed, with every process in it.",
            u64::from(current.is_some()),
        );
        w.counter(
            "promflow_cluster_dataflow_formations_total",
            "How many times the cluster's dataflow computation has formed.",
            self.formed(),
        );
        w.counter(
            "promflow_cluster_dataflow_losses_total",
            "How many times the cluster's dataflow computation failed (a process was lost).",
            self.shared.lost.load(Ordering::Relaxed),
        );
        w.gauge(
            "promflow_cluster_dataflow_parked_threads",
            "Dataflow threads parked for good as a failed computation stopped them, rather than let their second panic abort the process; each keeps what it held until the process restarts.",
            PARKED.lock().unwrap_or_else(|e| e.into_inner()).len() as u64,
        );
        let past_reads = self.shared.past_reads.load(Ordering::Relaxed);
        match current {
            Some(views) => views.write_metrics(w, past_reads),
            None => w.counter(live::VIEW_READS, live::VIEW_READS_HELP, past_reads),
        }
    }
}

impl Drop for Formation {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Where this process stands in the computation.
struct Place {
    listener: TcpListener,
    addresses: Vec<String>,
    me: Handshake,
    credentials: Option<Arc<dyn Credentials>>,
    tunnel: Option<Tunnel>,
    owner: SeriesOwner,
    lookback_ms: i64,
}

/// Closes `connections` under timely's feet: the computation over them fails in every
/// process, and this process's threads blocked on them wake and end.
fn close(connections: &[TcpStream]) {
    for c in connections {
        let _ = c.shutdown(std::net::Shutdown::Both);
    }
}

/// Carries every connection to another process in `tunnel` ([`Tunnel`]), this process at
/// place `me`: all at once, since each waits for the other side's part of the tunnel's
/// set-up, and one at a time could wait in a circle.
fn carry(tunnel: &Tunnel, me: usize, sockets: Vec<Option<TcpStream>>) -> io::Result<Vec<Option<TcpStream>>> {
    std::thread::scope(|s| {
        let carried: Vec<_> = sockets
            .into_iter()
            .enumerate()
            .map(|(j, socket)| s.spawn(move || socket.map(|socket| tunnel(j, j < me, socket)).transpose()))
            .collect();
        carried
            .into_iter()
            .map(|c| c.join().unwrap_or_else(|_| Err(io::Error::other("a connection's tunnel panicked"))))
            .collect()
    })
}

/// The formation thread: connect, run until lost, leave, again.
fn form(shared: &Shared, place: &Place, occupant: &dyn Occupant) {
    let stopped = || shared.stop.load(Ordering::Relaxed);
    let fingerprint = || fingerprint_of((place.me.fingerprint, occupant.fingerprint()));
    while !stopped() {
        let views_fingerprint = occupant.fingerprint();
        let me =
            Handshake { fingerprint: fingerprint_of((place.me.fingerprint, views_fingerprint)), ..place.me };
        // a reload that changes the views while this process waits starts the wait afresh
        let moved = || stopped() || fingerprint() != me.fingerprint;
        let sockets =
            match connect(&place.listener, &place.addresses, me, place.credentials.as_deref(), &moved) {
                Ok(Some(sockets)) => sockets,
                Ok(None) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "connecting the cluster's dataflow");
                    std::thread::sleep(RETRY_AFTER);
                    continue;
                }
            };
        // to leave the computation at will: its connections, closed under timely's feet
        let connections: Vec<TcpStream> =
            sockets.iter().flatten().filter_map(|s| s.try_clone().ok()).collect();
        let sockets = match &place.tunnel {
            None => sockets,
            Some(tunnel) => match carry(tunnel, me.index, sockets) {
                Ok(tunnelled) => tunnelled,
                Err(e) => {
                    tracing::warn!(error = %e, "securing the cluster's dataflow connections; forming it again");
                    close(&connections);
                    std::thread::sleep(RETRY_AFTER);
                    continue;
                }
            },
        };
        if occupant.fingerprint() != views_fingerprint {
            // the views changed while this process connected: start over before building
            close(&connections);
            continue;
        }
        let attempt = std::panic::AssertUnwindSafe(|| {
            let owner = Arc::clone(&place.owner);
            Incremental::start_in_cluster(me.workers, sockets, me.index, owner, place.lookback_ms)
                .and_then(|inc| occupant.occupy(inc, views_fingerprint))
        });
        let started = std::panic::catch_unwind(attempt).unwrap_or_else(|_| {
            // this thread goes on: a later panic on it is a first one again
            STOPPING.with(|s| s.set(false));
            Err("starting the computation panicked".to_string())
        });
        let views = match started {
            Ok(views) => views,
            Err(e) => {
                tracing::warn!(error = %e, "starting the cluster's dataflow; forming it again");
                close(&connections);
                std::thread::sleep(RETRY_AFTER);
                continue;
            }
        };
        shared.formed.fetch_add(1, Ordering::Relaxed);
        *shared.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::clone(&views));
        tracing::info!(processes = place.addresses.len(), "the cluster's dataflow is formed");
        let mut left = false;
        while !stopped() && !views.lost() {
            if !left && fingerprint() != me.fingerprint {
                tracing::info!(
                    "the views changed: leaving the cluster's dataflow to form it again with them"
                );
                close(&connections);
                left = true;
            }
            std::thread::sleep(CHECK_EVERY);
        }
        shared.current.lock().unwrap_or_else(|e| e.into_inner()).take();
        shared.past_reads.fetch_add(views.view_reads(), Ordering::Relaxed);
        // the others fail at once, and this process's connection threads wake
        close(&connections);
        if stopped() {
            // timely's orderly shutdown would retract this process's share from the others
            std::mem::forget(views);
            return;
        }
        if !left {
            shared.lost.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("the cluster's dataflow lost a process; forming it again");
        }
        // a failed computation's workers may never stop: leaving it must not hold up forming
        // the next one (its shutdown gives up after a bound and leaves the threads)
        let _ = std::thread::Builder::new().name("dataflow-leave".into()).spawn(move || drop(views));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_introduction_reads_back() {
        let h = Handshake { index: 2, processes: 3, workers: 4, fingerprint: u64::MAX - 7 };
        let challenge = [7u8; CHALLENGE];
        assert_eq!(Handshake::decode(&h.encode(true, &challenge)), Some((h, true, challenge)));
        assert_eq!(Handshake::decode(&h.encode(false, &challenge)), Some((h, false, challenge)));
        let mut other = h.encode(false, &challenge);
        other[0] = b'x';
        assert_eq!(Handshake::decode(&other), None);
    }

    #[test]
    fn only_the_same_computation_agrees() {
        let me = Handshake { index: 0, processes: 3, workers: 2, fingerprint: 9 };
        let them = Handshake { index: 1, ..me };
        assert!(me.agrees(&them));
        assert!(!me.agrees(&Handshake { fingerprint: 8, ..them }));
        assert!(!me.agrees(&Handshake { workers: 1, ..them }));
        assert!(!me.agrees(&Handshake { processes: 4, ..them }));
        assert!(!me.agrees(&Handshake { index: 3, ..them }));
        assert!(!me.agrees(&me));
    }
}
