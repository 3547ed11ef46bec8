//! The listeners: TLS, basic authentication and response headers from `--web.config.file`,
//! the connection cap (`--web.max-connections`) and the read timeout (`--web.read-timeout`),
//! applied to every path the router serves.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use promflow_config::cluster_secret::CLUSTER_AUTH_HEADER;
use promflow_config::web::{Access, WebGuard};
use promflow_remote::reader::CLUSTER_HOP_HEADER;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

use crate::Error;

/// How the listeners serve, shared by all of them.
pub struct Listeners {
    /// `--web.config.file`, re-read when it changes.
    pub web: Arc<WebGuard>,
    /// `--web.max-connections` across all listeners (0: no cap). A listener stops accepting
    /// while the cap is reached; waiting clients queue in the kernel's backlog, as behind Go's
    /// `netutil.LimitListener`.
    pub connections: Option<Arc<Semaphore>>,
    /// `--web.read-timeout`: the longest a connection may take to send a request's headers
    /// (and, over TLS, to finish its handshake); bodies are bounded by the router.
    pub read_timeout: Duration,
}

impl Listeners {
    /// Settings for `max_connections` (0: no cap) and `read_timeout`.
    pub fn new(web: Arc<WebGuard>, max_connections: usize, read_timeout: Duration) -> Listeners {
        Listeners {
            web,
            connections: (max_connections > 0).then(|| Arc::new(Semaphore::new(max_connections))),
            read_timeout,
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets open connections finish
/// their requests (bounded by the caller).
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    listeners: Arc<Listeners>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let permit = match &listeners.connections {
            Some(s) => tokio::select! {
                p = Arc::clone(s).acquire_owned() => Some(p.map_err(|_| Error::Serve(std::io::Error::other("closed")))?),
                () = &mut shutdown => break,
            },
            None => None,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // out of file descriptors and the like: keep serving the open connections
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let settings = match listeners.web.current() {
            Ok(s) => s,
            Err(e) => {
                // fail closed: an unreadable web config serves nobody, over TLS or not
                tracing::warn!(peer = %peer, error = %e, "refusing a connection: the web configuration is invalid");
                continue;
            }
        };
        let app = app.clone();
        let read_timeout = listeners.read_timeout;
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            let activity = Arc::new(Activity::default());
            let stream = IdleDeadline::new(stream, Arc::clone(&activity), read_timeout);
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder.http1().timer(TokioTimer::new()).header_read_timeout(read_timeout);
            if !settings.config.http_server_config.http2 {
                builder = builder.http1_only();
            }
            let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                if req.headers().contains_key(header::UPGRADE) {
                    // a websocket is quiet for as long as its subscriptions are
                    activity.upgraded.store(true, Ordering::Relaxed);
                }
                let serving = Serving::new(Arc::clone(&activity));
                let mut req = req.map(axum::body::Body::new);
                req.extensions_mut().insert(crate::ClientAddr(peer));
                let answer = app.clone().oneshot(req);
                async move {
                    let answer = answer.await;
                    drop(serving);
                    answer
                }
            });
            let result = match &settings.tls {
                None => {
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    watcher.watch(conn.into_owned()).await
                }
                Some(tls) => {
                    let mut config = (**tls).clone();
                    config.alpn_protocols = if settings.config.http_server_config.http2 {
                        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
                    } else {
                        vec![b"http/1.1".to_vec()]
                    };
                    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
                    let stream = match tokio::time::timeout(read_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(peer = %peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(peer = %peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    watcher.watch(conn.into_owned()).await
                }
            };
            if let Err(e) = result {
                tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    // requests in flight finish; idle keep-alive connections are closed
    graceful.shutdown().await;
    Ok(())
}

/// A cluster's nodes first: a request that carries the cluster's right token is let in.
/// Then `rate_limit` (429 beyond it) for every other request; then, a wrong token, and with a
/// cluster secret a request marked as a hop without the token, get 401. Then basic
/// authentication from `basic_auth_users`, for every path: missing or wrong credentials get
/// 401 with a `WWW-Authenticate` challenge, an unreadable web configuration 500 (fail
/// closed). bcrypt runs on a blocking thread.
pub(crate) async fn authenticate(State(web): State<Arc<WebGuard>>, req: Request, next: Next) -> Response {
    let token = req.headers().get(CLUSTER_AUTH_HEADER);
    // a node's request passes the rate limit: the client's request it serves was counted at
    // the node the client reached
    if token.is_some_and(|t| web.admits_node(t.as_bytes())) {
        return next.run(req).await;
    }
    if !web.allow_request() {
        return (StatusCode::TOO_MANY_REQUESTS, "Too Many Requests\n").into_response();
    }
    if token.is_some() {
        return (StatusCode::UNAUTHORIZED, "Unauthorized: wrong cluster credentials\n").into_response();
    }
    if web.authenticates_nodes() && req.headers().contains_key(CLUSTER_HOP_HEADER) {
        return (StatusCode::UNAUTHORIZED, "Unauthorized: a cluster hop without the cluster's credentials\n")
            .into_response();
    }
    if !web.requires_auth() && web.current().is_ok() {
        return next.run(req).await;
    }
    let credentials = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic ").or_else(|| v.strip_prefix("basic ")))
        .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64.trim()).ok())
        .and_then(|raw| String::from_utf8(raw).ok())
        .and_then(|s| s.split_once(':').map(|(u, p)| (u.to_string(), p.to_string())));
    let guard = Arc::clone(&web);
    let access = tokio::task::spawn_blocking(move || {
        guard.check(credentials.as_ref().map(|(u, p)| (u.as_str(), p.as_str())))
    })
    .await
    .unwrap_or_else(|e| Access::Broken(e.to_string()));
    match access {
        Access::Granted => next.run(req).await,
        Access::Denied => (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Basic")], "Unauthorized\n")
            .into_response(),
        Access::Broken(e) => {
            tracing::error!(error = %e, "refusing a request: the web configuration is invalid");
            (StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error\n").into_response()
        }
    }
}

/// `http_server_config.headers` on every response.
pub(crate) async fn response_headers(State(web): State<Arc<WebGuard>>, req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    if let Ok(settings) = web.current() {
        for (name, value) in &settings.config.http_server_config.headers {
            if let (Ok(n), Ok(v)) =
                (HeaderName::try_from(name.as_str()), HeaderValue::try_from(value.as_str()))
            {
                resp.headers_mut().insert(n, v);
            }
        }
    }
    resp
}

/// `--web.read-timeout` for request bodies: a body that sends nothing for that long fails
/// the request instead of holding its connection.
pub(crate) async fn body_deadline(State(timeout): State<Duration>, req: Request, next: Next) -> Response {
    next.run(req.map(|b| axum::body::Body::new(tower_http::timeout::TimeoutBody::new(timeout, b)))).await
}

/// What a connection is doing, as its service sees it.
#[derive(Default)]
struct Activity {
    /// Requests being answered.
    serving: AtomicUsize,
    /// Upgraded to a websocket: no idle deadline any more.
    upgraded: AtomicBool,
}

/// Counts a request as being answered while it lives.
struct Serving(Arc<Activity>);

impl Serving {
    fn new(activity: Arc<Activity>) -> Serving {
        activity.serving.fetch_add(1, Ordering::Relaxed);
        Serving(activity)
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.0.serving.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection that fails its reads once it has been idle (no request being answered,
/// nothing read or written) for the read timeout, as Go closes idle connections after its
/// `IdleTimeout` (which Prometheus leaves to default to the read timeout). hyper's own
/// header timeout bounds a request's headers once they start arriving; this bounds the wait
/// before them, and a TLS handshake.
struct IdleDeadline<IO> {
    io: IO,
    activity: Arc<Activity>,
    timeout: Duration,
    last: Instant,
    deadline: Pin<Box<Sleep>>,
}

impl<IO> IdleDeadline<IO> {
    fn new(io: IO, activity: Arc<Activity>, timeout: Duration) -> Self {
        let last = Instant::now();
        IdleDeadline {
            io,
            activity,
            timeout,
            last,
            deadline: Box::pin(tokio::time::sleep_until(last + timeout)),
        }
    }

    /// Whether the connection has been idle too long; otherwise arms the timer to wake the
    /// pending read when it might be.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        if self.activity.serving.load(Ordering::Relaxed) > 0 || self.activity.upgraded.load(Ordering::Relaxed)
        {
            return false;
        }
        let due = self.last + self.timeout;
        if self.deadline.deadline() != due {
            self.deadline.as_mut().reset(due);
        }
        self.deadline.as_mut().poll(cx).is_ready()
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for IdleDeadline<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.io).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    self.last = Instant::now();
                }
                Poll::Ready(r)
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "idle connection timed out",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for IdleDeadline<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.last = Instant::now();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.last = Instant::now();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
