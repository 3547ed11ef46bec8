//! TLS on the cluster's dataflow computation.
//!
//! timely runs over plain TCP sockets. With a `--web.config.file` that serves TLS, each
//! connection to another process, once the set-up has agreed on it, is carried in a TLS
//! session with the web configuration's settings (the same as the nodes' HTTP calls to each
//! other: the listener's certificate and client verification on the side that accepted, and
//! on the side that dialled the client CA as roots and the node's certificate as its client
//! certificate). timely is given one end of a loopback connection, and this process relays
//! between its other end and the TLS session on the server's runtime.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use promflow_config::web::WebGuard;
use promflow_incremental::cluster::Tunnel;
use rustls::pki_types::ServerName;
use tokio_rustls::{TlsAcceptor, TlsConnector, TlsStream};

/// How long a TLS handshake with another process may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Each direction's relay buffer: large enough that a batch of timely's messages crosses
/// in a few copies.
const RELAY_BUFFER: usize = 256 * 1024;

/// The tunnel for the processes at `addresses` (`host:port`, in the computation's order),
/// with the TLS settings `web` has when each connection is set up (a renewed certificate
/// counts from the next formation), the relays running on `runtime`.
pub fn tunnel(addresses: Vec<String>, web: Arc<WebGuard>, runtime: tokio::runtime::Handle) -> Tunnel {
    Arc::new(move |peer, dialled, plain| {
        let address = addresses.get(peer).ok_or_else(|| io::Error::other(format!("no process {peer}")))?;
        let session = secure(address, dialled, plain, &web, &runtime)?;
        let (timely_end, relay_end) = loopback()?;
        let relay_end = {
            let _entered = runtime.enter();
            tokio::net::TcpStream::from_std(relay_end)?
        };
        runtime.spawn(relay(session, relay_end, address.clone()));
        Ok(timely_end)
    })
}

/// The TLS session over `plain` with the process at `address`: as its client when this
/// process `dialled` it, else as its server.
fn secure(
    address: &str,
    dialled: bool,
    plain: TcpStream,
    web: &WebGuard,
    runtime: &tokio::runtime::Handle,
) -> io::Result<TlsStream<tokio::net::TcpStream>> {
    let settings = web.current().map_err(io::Error::other)?;
    let Some(server) = settings.tls.clone() else {
        return Err(io::Error::other("the web configuration no longer serves TLS: restart every node"));
    };
    let client = match settings.config.peer_tls() {
        Some(tls) => tls.client_settings().map_err(io::Error::other)?,
        None => {
            return Err(io::Error::other("the web configuration no longer serves TLS: restart every node"))
        }
    };
    plain.set_nonblocking(true)?;
    let name = server_name(address)?;
    runtime.block_on(async move {
        let tcp = tokio::net::TcpStream::from_std(plain)?;
        let handshake = async {
            if dialled {
                TlsConnector::from(client).connect(name, tcp).await.map(TlsStream::from)
            } else {
                TlsAcceptor::from(server).accept(tcp).await.map(TlsStream::from)
            }
        };
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
            Ok(Ok(session)) => Ok(session),
            Ok(Err(e)) => Err(io::Error::new(e.kind(), format!("TLS with the process at {address}: {e}"))),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("TLS with the process at {address}: no handshake in {HANDSHAKE_TIMEOUT:?}"),
            )),
        }
    })
}

/// The name the certificate of the process at `address` must carry: its host (an IP address
/// as an IP SAN).
fn server_name(address: &str) -> io::Result<ServerName<'static>> {
    let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{address}: {e}")))
}

/// A connected pair on loopback: the end for timely (blocking, as timely reads it) and the
/// end this process relays. A connection that another local process slips in first is
/// turned away: only the one this process dialled is taken.
fn loopback() -> io::Result<(TcpStream, TcpStream)> {
    let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))?;
    let timely_end = TcpStream::connect(listener.local_addr()?)?;
    let mine: SocketAddr = timely_end.local_addr()?;
    listener.set_nonblocking(true)?;
    let deadline = std::time::Instant::now() + HANDSHAKE_TIMEOUT;
    let relay_end = loop {
        match listener.accept() {
            Ok((stream, from)) if from == mine => break stream,
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(e),
        }
    };
    for end in [&timely_end, &relay_end] {
        end.set_nodelay(true)?;
    }
    relay_end.set_nonblocking(true)?;
    Ok((timely_end, relay_end))
}

/// Relays between the TLS `session` with the process at `address` and this process's end
/// of the loopback connection, until either closes or fails; then both close, and timely's
/// computation over them fails as over a plain connection that closes.
async fn relay(
    mut session: TlsStream<tokio::net::TcpStream>,
    mut relay_end: tokio::net::TcpStream,
    address: String,
) {
    let relayed =
        tokio::io::copy_bidirectional_with_sizes(&mut session, &mut relay_end, RELAY_BUFFER, RELAY_BUFFER)
            .await;
    if let Err(e) = relayed {
        tracing::debug!(peer = %address, error = %e, "the TLS relay of a dataflow connection ended");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_names_the_host_of_the_address() {
        let name = |a: &str| server_name(a).map(|n| n.to_str().into_owned()).ok();
        assert_eq!(name("127.0.0.1:9001").as_deref(), Some("127.0.0.1"));
        assert_eq!(name("[::1]:9001").as_deref(), Some("::1"));
        assert_eq!(name("node-2.example:9001").as_deref(), Some("node-2.example"));
        assert_eq!(name("bad host:1"), None);
    }

    #[test]
    fn the_loopback_pair_carries_bytes_both_ways() {
        use std::io::{Read, Write};
        let (mut a, mut b) = loopback().unwrap();
        b.set_nonblocking(false).unwrap();
        a.write_all(b"ping").unwrap();
        let mut got = [0u8; 4];
        b.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ping");
        b.write_all(b"pong").unwrap();
        a.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"pong");
    }
}
