//! The secret the nodes of a cluster share (`--cluster.secret-file`, promflow's extension).
//!
//! A node proves to another that it holds the secret without sending it:
//!
//! - over HTTP, each request from one node to another carries [`CLUSTER_AUTH_HEADER`] with
//!   [`ClusterSecret::http_token`], a keyed digest of a fixed text. A node lets such a request
//!   in past basic authentication and the rate limit, and honours the hop header only on
//!   such a request;
//! - on the dataflow port, both ends of a connection answer the other's random challenge with
//!   [`ClusterSecret::prove`], so a recorded handshake cannot be replayed.
//!
//! Neither encrypts anything: the token can be read off a network the nodes' HTTP crosses,
//! as a basic-auth password can.

use std::path::Path;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::Error;

/// The header a node's requests to the other nodes carry ([`ClusterSecret::http_token`]).
pub const CLUSTER_AUTH_HEADER: &str = "promflow-cluster-auth";

/// The fewest bytes a secret may have: 128 bits, so that it cannot be guessed.
pub const MIN_SECRET_BYTES: usize = 16;

/// What the HTTP token is a digest of: a text no dataflow proof starts with.
const HTTP_CONTEXT: &[u8] = b"promflow cluster http v1";

/// A cluster's shared secret, read from its file. It never appears in `Debug` output.
#[derive(Clone)]
pub struct ClusterSecret {
    key: Vec<u8>,
}

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSecret(<secret>)")
    }
}

impl ClusterSecret {
    /// Reads the secret from `path`: the file's bytes without trailing whitespace (a line
    /// break an editor adds), at least [`MIN_SECRET_BYTES`] of them.
    pub fn read(path: &Path) -> Result<ClusterSecret, Error> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
        let kept = bytes.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(0, |i| i + 1);
        ClusterSecret::new(bytes[..kept].to_vec())
            .map_err(|message| Error::ClusterSecret { path: path.to_path_buf(), message })
    }

    /// A secret of `key`'s bytes; refused when shorter than [`MIN_SECRET_BYTES`].
    pub fn new(key: Vec<u8>) -> Result<ClusterSecret, String> {
        if key.len() < MIN_SECRET_BYTES {
            return Err(format!(
                "the secret has {} bytes; it needs at least {MIN_SECRET_BYTES} (for example the output of `openssl rand -hex 32`)",
                key.len()
            ));
        }
        Ok(ClusterSecret { key })
    }

    /// The value of [`CLUSTER_AUTH_HEADER`]: a digest of a fixed text keyed with the secret,
    /// in hex. It is the same on every node holding the secret.
    pub fn http_token(&self) -> String {
        hex::encode(self.prove(&[HTTP_CONTEXT]))
    }

    /// Whether `token`, a request's [`CLUSTER_AUTH_HEADER`], is this secret's HTTP token
    /// (compared in constant time).
    pub fn admits(&self, token: &[u8]) -> bool {
        hex::decode(token).is_ok_and(|raw| self.verify(&[HTTP_CONTEXT], &raw))
    }

    /// The digest of `parts`, in order, keyed with the secret: what a node answers a
    /// challenge with. A caller puts what the proof is for (its side of a handshake, both
    /// challenges) in `parts`, so that no proof stands for another.
    pub fn prove(&self, parts: &[&[u8]]) -> [u8; 32] {
        self.mac_of(parts).finalize().into_bytes().into()
    }

    /// Whether `proof` is [`ClusterSecret::prove`] of `parts` (compared in constant time).
    pub fn verify(&self, parts: &[&[u8]], proof: &[u8]) -> bool {
        self.mac_of(parts).verify_slice(proof).is_ok()
    }

    /// The keyed digest with `parts` taken in, each after its length: ("ab", "c") and
    /// ("a", "bc") differ.
    fn mac_of(&self, parts: &[&[u8]]) -> Hmac<Sha256> {
        let mut mac = self.mac();
        for p in parts {
            mac.update(&(p.len() as u64).to_le_bytes());
            mac.update(p);
        }
        mac
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC takes a key of any length
        Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC accepts every key length")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> ClusterSecret {
        ClusterSecret::new(s.as_bytes().to_vec()).unwrap()
    }

    #[test]
    fn a_token_admits_only_under_its_own_secret() {
        let a = secret("0123456789abcdef-a");
        let b = secret("0123456789abcdef-b");
        let token = a.http_token();
        assert_eq!(token.len(), 64);
        assert_eq!(token, secret("0123456789abcdef-a").http_token());
        assert!(a.admits(token.as_bytes()));
        assert!(a.admits(token.to_uppercase().as_bytes()));
        assert!(!b.admits(token.as_bytes()));
        assert!(!a.admits(&token.as_bytes()[..62]));
        assert!(!a.admits(b"zz"));
        assert!(!a.admits(b""));
    }

    #[test]
    fn proofs_depend_on_every_part_and_its_bounds() {
        let s = secret("0123456789abcdef");
        let p = s.prove(&[b"dial", b"ab", b"c"]);
        assert!(s.verify(&[b"dial", b"ab", b"c"], &p));
        assert!(!s.verify(&[b"dial", b"a", b"bc"], &p));
        assert!(!s.verify(&[b"answer", b"ab", b"c"], &p));
        assert!(!secret("0123456789abcdeF").verify(&[b"dial", b"ab", b"c"], &p));
    }

    #[test]
    fn a_short_or_missing_secret_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "short\n").unwrap();
        let e = ClusterSecret::read(&path).unwrap_err().to_string();
        assert!(e.contains("5 bytes") && e.contains("at least 16"), "{e}");
        std::fs::write(&path, "0123456789abcdef\n\n").unwrap();
        let read = ClusterSecret::read(&path).unwrap();
        assert_eq!(read.http_token(), secret("0123456789abcdef").http_token());
        assert!(ClusterSecret::read(&dir.path().join("none")).is_err());
        assert!(!format!("{read:?}").contains("0123"));
    }
}
