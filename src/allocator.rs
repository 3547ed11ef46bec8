//! The server's allocator and its settings, in a file of its own so that the benchmarks that
//! measure memory in process (`benches/dataflow.rs`) include the same ones.

/// The server allocates with jemalloc (`docs/decisions/2026-11-27-jemalloc.md`): at a million
/// series it holds 5–13 % less memory per series than glibc's `malloc` did, and a lookup that
/// allocates one string per answer no longer waits on glibc's search of its free lists.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings, read once at its start (`_RJEM_MALLOC_CONF` in the environment is
/// read after them and wins):
/// - two arenas, not four per core: memory freed in one arena is not reused by another, and
///   the server's threads (remote-write decoding, the dataflow worker, history reads) would
///   each keep their own peak;
/// - a background thread that hands freed pages back to the system after jemalloc's decay
///   time, so resident memory falls after a compaction or a large query without any thread
///   allocating.
#[cfg(not(target_env = "msvc"))]
#[export_name = "_rjem_malloc_conf"]
static JEMALLOC_CONF: &u8 = &b"narenas:2,background_thread:true\0"[0];
