//! `promflow subscribe <server-url> '<query>'`: subscribes to a query's live result over the
//! server's websocket (`/api/v1/subscribe`, docs/api.md) and prints every message as one JSON
//! line as it arrives, flushing after each: the snapshot, then each change, and the
//! heartbeats. The argument order is `promtool query instant`'s, and `--http.config.file`
//! carries credentials and TLS settings as it does for promtool.

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use promflow_config::HttpClientConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser, Debug)]
#[command(name = "promflow subscribe", about = "Subscribe to a query's live result and print each message.")]
struct SubscribeArgs {
    /// The query language: promql or sql.
    #[arg(long, default_value = "promql")]
    lang: String,
    /// HTTP client settings (basic_auth, authorization, tls_config, http_headers), as
    /// promtool's flag of the same name reads them.
    #[arg(long = "http.config.file")]
    http_config_file: Option<PathBuf>,
    /// The server: http://host:port[/prefix], https://…, or host:port.
    server: String,
    /// The query.
    query: String,
}

/// Runs the command; returns the exit status: 1 when the settings are invalid, the server
/// refuses the subscription or the connection ends, 0 when standard output closes (`| head`).
pub fn main(args: Vec<OsString>) -> i32 {
    let args = match SubscribeArgs::try_parse_from(std::iter::once(OsString::from("subscribe")).chain(args)) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 1 } else { 0 };
        }
    };
    let fail = |e: String| {
        eprintln!("promflow subscribe: {e}");
        1
    };
    let settings = match &args.http_config_file {
        Some(path) => match HttpClientConfig::load(path) {
            Ok(s) => s,
            Err(e) => return fail(e.to_string()),
        },
        None => HttpClientConfig::default(),
    };
    let unsupported = settings.unsupported_by_direct_client();
    if !unsupported.is_empty() {
        return fail(format!("--http.config.file: not supported by this client: {}", unsupported.join(", ")));
    }
    let request = match subscription_request(&args.server, &settings) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => return fail(e.to_string()),
    };
    runtime.block_on(async {
        let url = request.uri().to_string();
        match connect(request, &settings).await {
            Ok(socket) => stream(socket, &args.lang, &args.query).await,
            Err(e) => fail(format!("connecting to {url}: {e}")),
        }
    })
}

/// The websocket address of a server given as `http(s)://host:port[/prefix]` or `host:port`.
fn websocket_url(server: &str) -> Result<String, String> {
    let server = server.trim_end_matches('/');
    let (scheme, rest) = if let Some(rest) = server.strip_prefix("http://") {
        ("ws", rest)
    } else if let Some(rest) = server.strip_prefix("https://") {
        ("wss", rest)
    } else if server.contains("://") {
        return Err(format!("{server:?} is not an http:// or https:// address"));
    } else {
        ("ws", server)
    };
    Ok(format!("{scheme}://{rest}/api/v1/subscribe"))
}

/// The upgrade request with the settings' headers (credentials first).
fn subscription_request(server: &str, settings: &HttpClientConfig) -> Result<Request, String> {
    let url = websocket_url(server)?;
    let mut request = url.as_str().into_client_request().map_err(|e| format!("{url}: {e}"))?;
    for (name, value) in settings.request_headers().map_err(|e| e.to_string())? {
        let name = HeaderName::try_from(name.as_str()).map_err(|e| format!("header {name:?}: {e}"))?;
        let value = HeaderValue::try_from(value).map_err(|e| format!("header {name}: {e}"))?;
        request.headers_mut().append(name, value);
    }
    Ok(request)
}

/// A stream the websocket runs over: plain TCP, or TLS over it.
trait Transport: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Transport for T {}

type Socket = tokio_tungstenite::WebSocketStream<Box<dyn Transport>>;

/// Connects and upgrades; `wss://` uses the settings' `tls_config` (its `server_name`, when
/// set, is also the name sent in the handshake, as Go's client sends it).
async fn connect(request: Request, settings: &HttpClientConfig) -> Result<Socket, String> {
    let uri = request.uri();
    let secure = uri.scheme_str() == Some("wss");
    let host = uri.host().ok_or("the address has no host")?.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
    let tcp = tokio::net::TcpStream::connect((host, port)).await.map_err(|e| e.to_string())?;
    let transport: Box<dyn Transport> = if secure {
        let tls = settings.tls_config.client_settings().map_err(|e| e.to_string())?;
        let name = settings.tls_config.server_name.as_deref().unwrap_or(host).to_string();
        let name = rustls::pki_types::ServerName::try_from(name).map_err(|e| e.to_string())?;
        let connector = tokio_rustls::TlsConnector::from(Arc::clone(&tls));
        Box::new(connector.connect(name, tcp).await.map_err(|e| format!("TLS: {e}"))?)
    } else {
        Box::new(tcp)
    };
    let (socket, _) = tokio_tungstenite::client_async(request, transport).await.map_err(|e| e.to_string())?;
    Ok(socket)
}

/// Sends the subscription and prints what comes back until it ends.
async fn stream(mut socket: Socket, lang: &str, query: &str) -> i32 {
    let request = serde_json::json!({"id": 1, "lang": lang, "query": query}).to_string();
    if let Err(e) = socket.send(Message::Text(request.into())).await {
        eprintln!("promflow subscribe: {e}");
        return 1;
    }
    while let Some(message) = socket.next().await {
        let text = match message {
            Ok(Message::Text(text)) => text,
            Ok(Message::Close(frame)) => {
                let why = frame.map(|f| f.reason.to_string()).unwrap_or_default();
                eprintln!("promflow subscribe: the server closed the connection {why}");
                return 1;
            }
            Ok(_) => continue,
            Err(e) => {
                eprintln!("promflow subscribe: {e}");
                return 1;
            }
        };
        let mut out = std::io::stdout().lock();
        if writeln!(out, "{}", text.as_str()).and_then(|_| out.flush()).is_err() {
            return 0;
        }
        // the subscription was refused: nothing more will come
        let message: serde_json::Value = serde_json::from_str(text.as_str()).unwrap_or_default();
        if message["type"] == "error" && message["id"] == 1 {
            return 1;
        }
    }
    1
}

#[cfg(test)]
mod tests {
    use super::websocket_url;

    #[test]
    fn websocket_addresses() {
        assert_eq!(websocket_url("http://127.0.0.1:9090").unwrap(), "ws://127.0.0.1:9090/api/v1/subscribe");
        assert_eq!(websocket_url("http://h:9/prom/").unwrap(), "ws://h:9/prom/api/v1/subscribe");
        assert_eq!(websocket_url("localhost:9090").unwrap(), "ws://localhost:9090/api/v1/subscribe");
        assert_eq!(websocket_url("https://h:9443").unwrap(), "wss://h:9443/api/v1/subscribe");
        assert!(websocket_url("ftp://h").is_err());
    }
}
