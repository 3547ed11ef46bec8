//! Log output in Prometheus's two formats: logfmt (`ts=… level=info msg="…" key=value`)
//! and JSON, selected by `--log.format`, filtered by `--log.level`.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Formats events as logfmt, quoting values that need it.
struct Logfmt;

#[derive(Default)]
struct Fields {
    message: String,
    rest: String,
}

fn quote(out: &mut String, v: &str) {
    if !v.is_empty() && !v.contains(|c: char| c == ' ' || c == '"' || c == '=' || c.is_control()) {
        out.push_str(v);
    } else {
        let _ = write!(out, "{v:?}");
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            let _ = write!(self.rest, " {}=", field.name());
            quote(&mut self.rest, value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.record_str(field, &format!("{value:?}"));
    }
}

impl<S, N> FormatEvent<S, N> for Logfmt
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, _ctx: &FmtContext<'_, S, N>, mut w: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let meta = event.metadata();
        let mut line = String::with_capacity(128);
        let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let _ = write!(
            line,
            "ts={ts} level={} source={} msg=",
            meta.level().as_str().to_lowercase(),
            meta.target()
        );
        quote(&mut line, &fields.message);
        line.push_str(&fields.rest);
        writeln!(w, "{line}")
    }
}

/// Installs the global subscriber.
pub fn init(level: &str, format: &str) {
    let filter = tracing_subscriber::EnvFilter::new(level);
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(false);
    if format == "json" {
        builder.json().init();
    } else {
        builder.event_format(Logfmt).init();
    }
}

/// What timely's threads say when they stop because a connection to another process of
/// the cluster's dataflow broke: timely stops the whole computation by panicking every
/// thread that touches the broken connection, which is how a lost node shows.
const CONNECTION_PANICS: &[&str] =
    &["timely communication error", "MergeQueue poisoned", "Send thread panic", "Recv thread panic"];

/// Logs the panics with which timely stops a failed cluster computation as one warning
/// line each, where the default hook prints a panic with its backtrace: the loss of a node
/// is expected, and it is handled (the computation forms again). A thread that panics so a
/// second time, from a destructor while it unwinds, is parked for good rather than let the
/// process abort. Every other panic goes to the default hook.
pub fn quiet_connection_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if CONNECTION_PANICS.iter().any(|p| message.starts_with(p)) {
            let thread = std::thread::current();
            tracing::warn!(
                thread = thread.name().unwrap_or(""),
                reason = message,
                "a dataflow thread stopped"
            );
            // a second such panic on the thread, from a destructor while it unwinds, parks
            // it rather than abort the server
            promflow_incremental::cluster::stop_thread_on_connection_loss();
        } else {
            default(info);
        }
    }));
}

#[cfg(test)]
mod tests {
    /// Set in the child process the test runs itself in.
    const CHILD: &str = "PROMFLOW_TEST_PARKING_CHILD";

    /// A thread stopped by a lost connection whose unwinding panics again in a destructor
    /// (an output flushing into a poisoned queue) is parked: without the hook the process
    /// would abort. The parked thread holds the panic hook's lock, which the test harness
    /// takes at its end, so the panics happen in a child process of this test binary that
    /// exits on its own once the thread is parked.
    #[test]
    fn a_second_connection_panic_parks_the_thread_instead_of_aborting() {
        if std::env::var_os(CHILD).is_some() {
            struct FlushesOnDrop;
            impl Drop for FlushesOnDrop {
                fn drop(&mut self) {
                    panic!("MergeQueue poisoned.");
                }
            }
            super::quiet_connection_panics();
            let worker = std::thread::spawn(|| {
                let _output = FlushesOnDrop;
                panic!("timely communication error: reading data: socket closed");
            });
            let id = worker.thread().id();
            let parked = (0..200).any(|_| {
                std::thread::sleep(std::time::Duration::from_millis(50));
                promflow_incremental::cluster::parked(id)
            });
            std::process::exit(if parked && !worker.is_finished() { 0 } else { 1 });
        }
        let name = "logging::tests::a_second_connection_panic_parks_the_thread_instead_of_aborting";
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", name, "--test-threads=1"])
            .env(CHILD, "1")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut status = None;
        for _ in 0..300 {
            status = child.try_wait().unwrap();
            if status.is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let Some(status) = status else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the child process did not end within 30 s");
        };
        assert!(status.success(), "the child process ended with {status}");
    }
}
