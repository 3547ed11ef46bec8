//! DNS service discovery (`dns_sd_configs`): SRV, A, AAAA, MX and NS records of the configured names,
//! looked up every `refresh_interval`, with Prometheus's `__meta_dns_*` labels.
//!
//! A small DNS client over UDP (RFC 1035): one question per query, answers parsed with name
//! compression. The servers are the `nameserver` lines of `/etc/resolv.conf`, or those
//! `--discovery.dns-server` names (promflow's own flag: containers and tests point it at their
//! own server). Names are asked as written, as fully qualified names (no search domains).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use promflow_config::DnsSdConfig;
use promflow_storage::Labels;

/// How long one query waits for its answer before the next server is asked.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

const TYPE_A: u16 = 1;
const TYPE_NS: u16 = 2;
const TYPE_MX: u16 = 15;
const TYPE_AAAA: u16 = 28;
const TYPE_SRV: u16 = 33;

/// A record of an answer.
#[derive(Clone, Debug, PartialEq)]
enum Record {
    Ip(IpAddr),
    Srv {
        port: u16,
        target: String,
    },
    /// An MX exchange or an NS server: a host name, scraped on the configured port.
    Host {
        kind: &'static str,
        target: String,
    },
}

/// The DNS servers of `/etc/resolv.conf` (port 53), or 127.0.0.1:53 if it names none.
pub fn system_servers() -> Vec<SocketAddr> {
    let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let mut out: Vec<SocketAddr> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|ip| ip.trim().parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect();
    if out.is_empty() {
        out.push(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 53));
    }
    out
}

/// The target groups of `name` for one `dns_sd_configs` entry: one per record,
/// `__address__` the SRV target and port (the target's name, not resolved, as Prometheus
/// does), the address, or the MX/NS host, with the configured port.
pub async fn discover(
    servers: &[SocketAddr],
    cfg: &DnsSdConfig,
    name: &str,
) -> Result<Vec<(Vec<String>, Labels)>, String> {
    let qtype = match cfg.type_.to_uppercase().as_str() {
        "A" => TYPE_A,
        "AAAA" => TYPE_AAAA,
        "SRV" | "" => TYPE_SRV,
        "MX" => TYPE_MX,
        "NS" => TYPE_NS,
        other => return Err(format!("record type {other} is not supported by promflow's DNS discovery")),
    };
    let mut out = Vec::new();
    for record in lookup(servers, name, qtype).await? {
        let mut labels = Labels::from_pairs([("__meta_dns_name", name)]);
        let address = match record {
            Record::Srv { port, target } => {
                labels.set("__meta_dns_srv_record_target", &target);
                labels.set("__meta_dns_srv_record_port", &port.to_string());
                format!("{}:{port}", target.trim_end_matches('.'))
            }
            Record::Host { kind, target } => {
                labels.set(&format!("__meta_dns_{kind}_record_target"), &target);
                format!("{}:{}", target.trim_end_matches('.'), cfg.port)
            }
            Record::Ip(IpAddr::V6(ip)) => format!("[{ip}]:{}", cfg.port),
            Record::Ip(ip) => format!("{ip}:{}", cfg.port),
        };
        out.push((vec![address], labels));
    }
    Ok(out)
}

/// Asks the servers in turn for `name`'s records of type `qtype`; a name that does not exist
/// or has no such records is an empty answer, not an error.
async fn lookup(servers: &[SocketAddr], name: &str, qtype: u16) -> Result<Vec<Record>, String> {
    let query = encode_query(name, qtype)?;
    let mut last = String::from("no DNS server");
    for server in servers {
        match ask(*server, &query).await {
            Ok(reply) => return parse_reply(&reply, qtype),
            Err(e) => last = format!("{server}: {e}"),
        }
    }
    Err(format!("looking up {name}: {last}"))
}

async fn ask(server: SocketAddr, query: &[u8]) -> Result<Vec<u8>, String> {
    let bind: SocketAddr =
        if server.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().map_err(|e| format!("{e}"))?;
    let sock = tokio::net::UdpSocket::bind(bind).await.map_err(|e| e.to_string())?;
    sock.send_to(query, server).await.map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 4096];
    let deadline = tokio::time::Instant::now() + QUERY_TIMEOUT;
    loop {
        let (n, from) = tokio::time::timeout_at(deadline, sock.recv_from(&mut buf))
            .await
            .map_err(|_| "timed out".to_string())?
            .map_err(|e| e.to_string())?;
        // an answer from elsewhere, or to another question, is not ours
        if from == server && n >= 2 && buf[..2] == query[..2] {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

/// A query for one question, recursion desired.
fn encode_query(name: &str, qtype: u16) -> Result<Vec<u8>, String> {
    let id =
        (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos())
            & 0xffff) as u16;
    let mut q = Vec::with_capacity(name.len() + 18);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(format!("invalid DNS name {name:?}"));
        }
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    Ok(q)
}

/// The records of type `qtype` in a reply (CNAMEs on the way are followed by the server).
fn parse_reply(reply: &[u8], qtype: u16) -> Result<Vec<Record>, String> {
    let bad = || "malformed DNS answer".to_string();
    if reply.len() < 12 {
        return Err(bad());
    }
    let flags = u16::from_be_bytes([reply[2], reply[3]]);
    if flags & 0x0200 != 0 {
        return Err("answer truncated (DNS over TCP is not supported)".into());
    }
    match flags & 0x000f {
        // no error, or no such name: an empty answer
        0 | 3 => {}
        rcode => return Err(format!("DNS server answered with code {rcode}")),
    }
    let qdcount = u16::from_be_bytes([reply[4], reply[5]]);
    let ancount = u16::from_be_bytes([reply[6], reply[7]]);
    let mut at = 12;
    for _ in 0..qdcount {
        at = skip_name(reply, at).ok_or_else(bad)? + 4;
    }
    let mut out = Vec::new();
    for _ in 0..ancount {
        at = skip_name(reply, at).ok_or_else(bad)?;
        let field = |i: usize| reply.get(at + i..at + i + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
        let (rtype, rdlen) = (field(0).ok_or_else(bad)?, field(8).ok_or_else(bad)? as usize);
        let rdata_at = at + 10;
        let rdata = reply.get(rdata_at..rdata_at + rdlen).ok_or_else(bad)?;
        if rtype == qtype {
            out.push(match rtype {
                TYPE_A if rdlen == 4 => {
                    Record::Ip(IpAddr::V4(Ipv4Addr::new(rdata[0], rdata[1], rdata[2], rdata[3])))
                }
                TYPE_AAAA if rdlen == 16 => {
                    let b: [u8; 16] = rdata.try_into().map_err(|_| bad())?;
                    Record::Ip(IpAddr::V6(Ipv6Addr::from(b)))
                }
                TYPE_SRV if rdlen >= 7 => Record::Srv {
                    port: u16::from_be_bytes([rdata[4], rdata[5]]),
                    target: read_name(reply, rdata_at + 6).ok_or_else(bad)?,
                },
                TYPE_MX if rdlen >= 3 => {
                    Record::Host { kind: "mx", target: read_name(reply, rdata_at + 2).ok_or_else(bad)? }
                }
                TYPE_NS if rdlen >= 1 => {
                    Record::Host { kind: "ns", target: read_name(reply, rdata_at).ok_or_else(bad)? }
                }
                _ => return Err(bad()),
            });
        }
        at = rdata_at + rdlen;
    }
    Ok(out)
}

/// The offset after the name at `at`.
fn skip_name(msg: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *msg.get(at)? as usize;
        match len {
            0 => return Some(at + 1),
            l if l & 0xc0 == 0xc0 => return Some(at + 2),
            l => at += 1 + l,
        }
    }
}

/// The name at `at`, following compression pointers (at most 64 of them), with a final dot.
fn read_name(msg: &[u8], mut at: usize) -> Option<String> {
    let mut name = String::new();
    for _ in 0..64 {
        let len = *msg.get(at)? as usize;
        if len == 0 {
            return Some(if name.is_empty() { ".".into() } else { name });
        }
        if len & 0xc0 == 0xc0 {
            at = ((len & 0x3f) << 8) | *msg.get(at + 1)? as usize;
            continue;
        }
        let label = msg.get(at + 1..at + 1 + len)?;
        name.push_str(std::str::from_utf8(label).ok()?);
        name.push('.');
        at += 1 + len;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_compression_pointers_and_hostile_loops() {
        // "a.b." at 0, then "c" + pointer to 0 at 5
        let msg = [1, b'a', 1, b'b', 0, 1, b'c', 0xc0, 0];
        assert_eq!(read_name(&msg, 5).as_deref(), Some("c.a.b."));
        assert_eq!(skip_name(&msg, 5), Some(9));
        // a pointer to itself is cut off, not followed for ever
        assert_eq!(read_name(&[0xc0, 0], 0), None);
        assert!(parse_reply(&[0; 5], TYPE_A).is_err());
    }

    #[test]
    fn ns_and_mx_answers_name_hosts() {
        // header, question "ex." NS, then one answer: pointer to the question's name, NS, IN,
        // TTL, and "ns1" + a pointer to "ex."
        let mut reply = vec![0, 1, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0];
        reply.extend([2, b'e', b'x', 0, 0, 2, 0, 1]);
        reply.extend([0xc0, 12, 0, 2, 0, 1, 0, 0, 0, 60, 0, 6, 3, b'n', b's', b'1', 0xc0, 12]);
        let ns = parse_reply(&reply, TYPE_NS).unwrap();
        assert_eq!(ns, vec![Record::Host { kind: "ns", target: "ns1.ex.".into() }]);
        // the same answer as MX: preference 10, then the exchange
        let mut mx = reply[..12].to_vec();
        mx.extend([2, b'e', b'x', 0, 0, 15, 0, 1]);
        mx.extend([0xc0, 12, 0, 15, 0, 1, 0, 0, 0, 60, 0, 8, 0, 10, 3, b'm', b'x', b'1', 0xc0, 12]);
        let got = parse_reply(&mx, TYPE_MX).unwrap();
        assert_eq!(got, vec![Record::Host { kind: "mx", target: "mx1.ex.".into() }]);
    }

    #[test]
    fn a_query_is_one_question() {
        let q = encode_query("x.example.", TYPE_SRV).unwrap();
        assert_eq!(&q[2..6], &[1, 0, 0, 1]);
        assert_eq!(&q[12..], &[1, b'x', 7, b'e', b'x', b'a', b'm', b'p', b'l', b'e', 0, 0, 33, 0, 1]);
        assert!(encode_query("bad..name", TYPE_A).is_err());
    }
}
