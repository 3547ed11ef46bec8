//! `promflow subscribe <server-url> '<query>'`: subscribes to a query's live result over the
//! server's websocket (`/api/v1/subscribe`, docs/api.md) and prints every message as one JSON
//! line as it arrives, flushing after each: the snapshot, then each change, and the
//! heartbeats. The argument order is `promtool query instant`'s.

use std::ffi::OsString;
use std::io::Write;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

const USAGE: &str = "usage: promflow subscribe [--lang=promql|sql] <server-url> <query>";

/// Runs the command; returns the exit status: 1 when the server refuses the subscription or
/// the connection ends, 0 when standard output closes (`| head`).
pub fn main(args: Vec<OsString>) -> i32 {
    let mut lang = "promql".to_string();
    let mut positional = Vec::new();
    let mut args = args.into_iter().map(|a| a.to_string_lossy().into_owned());
    while let Some(a) = args.next() {
        if let Some(v) = a.strip_prefix("--lang=") {
            lang = v.to_string();
        } else if a == "--lang" {
            lang = args.next().unwrap_or_default();
        } else if a == "-h" || a == "--help" {
            println!("{USAGE}");
            return 0;
        } else {
            positional.push(a);
        }
    }
    let [server, query] = positional.as_slice() else {
        eprintln!("{USAGE}");
        return 1;
    };
    let url = match websocket_url(server) {
        Ok(u) => u,
        Err(e) => {
            eprintln!("promflow subscribe: {e}");
            return 1;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("promflow subscribe: {e}");
            return 1;
        }
    };
    runtime.block_on(run(&url, &lang, query))
}

/// The websocket address of a server given as `http://host:port[/prefix]`.
fn websocket_url(server: &str) -> Result<String, String> {
    let server = server.trim_end_matches('/');
    let rest = if let Some(rest) = server.strip_prefix("http://") {
        rest
    } else if server.starts_with("https://") {
        return Err("https is not supported by this client yet; use http://".into());
    } else if server.contains("://") {
        return Err(format!("{server:?} is not an http:// address"));
    } else {
        server
    };
    Ok(format!("ws://{rest}/api/v1/subscribe"))
}

async fn run(url: &str, lang: &str, query: &str) -> i32 {
    let mut socket = match tokio_tungstenite::connect_async(url).await {
        Ok((socket, _)) => socket,
        Err(e) => {
            eprintln!("promflow subscribe: connecting to {url}: {e}");
            return 1;
        }
    };
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
        assert!(websocket_url("https://h").is_err());
        assert!(websocket_url("ftp://h").is_err());
    }
}
