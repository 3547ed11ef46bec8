//! The threads that evaluate queries, apart from ingest's and at a lower CPU priority.
//!
//! A query over a million series keeps a core busy for seconds. On the same threads and at
//! the same priority as remote write and scrapes, a few such queries take their share of the
//! CPU from ingest, whose senders then fall behind. A monitoring server must keep taking
//! samples while someone looks at them, so queries run on threads of their own whose nice
//! value is raised: when both want the CPU, the kernel gives ingest the larger share, and an
//! otherwise idle CPU still runs a query at full speed.

use std::sync::atomic::{AtomicBool, Ordering};

/// Runs blocking evaluations (PromQL, SQL, series lookups) on threads whose nice value is
/// `niceness` above the process's.
pub struct QueryPool {
    /// The runtime whose blocking threads run the evaluations; `None` once dropped.
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for QueryPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryPool").finish_non_exhaustive()
    }
}

/// Evaluations at most in flight at once on the pool, tokio's default for its shared pool.
/// PromQL and SQL also wait for a query slot (`--query.max-concurrency`); lookups,
/// federation and remote read do not.
const MAX_THREADS: usize = 512;

impl QueryPool {
    /// A pool whose threads run `niceness` (0 to 19) nice steps below the process: 0 runs
    /// them at its priority.
    pub fn new(niceness: i32) -> std::io::Result<QueryPool> {
        let warned = std::sync::Arc::new(AtomicBool::new(false));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(MAX_THREADS)
            .thread_name("promflow-query")
            // DataFusion's SQL execution takes timers from the runtime it runs on
            .enable_all()
            .on_thread_start(move || {
                if niceness > 0 {
                    if let Err(e) = lower_priority(niceness) {
                        if !warned.swap(true, Ordering::Relaxed) {
                            tracing::warn!(error = %e, niceness, "query threads run at the server's priority: their nice value cannot be raised");
                        }
                    }
                }
            })
            .build()?;
        Ok(QueryPool { runtime: Some(runtime) })
    }

    /// Runs `f` on one of the pool's threads; await the handle from any runtime.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> tokio::task::JoinHandle<T> {
        self.handle().spawn_blocking(f)
    }

    /// The pool's runtime, whose `spawn_blocking` runs on the pool (for a front end that
    /// takes a runtime, such as the SQL wire protocol's). Valid while the pool lives.
    pub fn handle(&self) -> &tokio::runtime::Handle {
        self.runtime.as_ref().expect("the pool lives until dropped").handle()
    }
}

impl Drop for QueryPool {
    fn drop(&mut self) {
        // dropping a runtime waits for its threads, which an async context must not do;
        // evaluations still running stop at their next cancellation check or run out
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Raises the calling thread's nice value by `by` (to at most 19). Linux keeps a nice value
/// per thread, so this leaves the process's other threads as they are.
#[cfg(target_os = "linux")]
fn lower_priority(by: i32) -> std::io::Result<()> {
    // SAFETY: plain system calls on the calling thread's own id, no memory passed
    unsafe {
        let tid = libc::gettid() as libc::id_t;
        *libc::__errno_location() = 0;
        let now = libc::getpriority(libc::PRIO_PROCESS, tid);
        // -1 is a valid nice value, so errno tells an error apart
        if now == -1 && *libc::__errno_location() != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::setpriority(libc::PRIO_PROCESS, tid, (now + by).min(19)) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn lower_priority(_by: i32) -> std::io::Result<()> {
    Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "per-thread nice values are Linux's"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The nice value of the calling thread.
    fn nice_of_this_thread() -> i32 {
        let tid = unsafe { libc::gettid() } as libc::id_t;
        unsafe { libc::getpriority(libc::PRIO_PROCESS, tid) }
    }

    #[test]
    fn evaluations_run_at_the_raised_nice_value_and_others_do_not() {
        let before = nice_of_this_thread();
        let pool = QueryPool::new(7).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let inside = rt.block_on(pool.spawn(nice_of_this_thread)).unwrap();
        assert_eq!(inside, (before + 7).min(19));
        assert_eq!(nice_of_this_thread(), before, "the caller's thread keeps its priority");
        let same = QueryPool::new(0).unwrap();
        assert_eq!(rt.block_on(same.spawn(nice_of_this_thread)).unwrap(), before);
    }

    #[test]
    fn a_pool_dropped_in_an_async_context_does_not_panic() {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let pool = QueryPool::new(5).unwrap();
            assert_eq!(pool.spawn(|| 2 + 2).await.unwrap(), 4);
            drop(pool);
        });
    }
}
