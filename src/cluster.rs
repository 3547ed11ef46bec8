//! A cluster of promflow processes (`--cluster.peer` and `--cluster.index`, or a
//! `--cluster.peers-file` read again at every reload): who the peers are, and which of them
//! owns a scrape target or a series.
//!
//! Ownership is rendezvous hashing: every node scores each peer against a key's hash and the
//! highest score owns the key, so every node agrees on the owner without talking to the
//! others, and adding or removing a peer moves only the keys that peer wins or held
//! (`docs/cluster.md`).

/// The peers of a cluster, this node among them.
#[derive(Clone, Debug)]
pub struct Cluster {
    /// Every node's address (`host:port` of its HTTP listener), in the same order on every
    /// node.
    peers: Vec<String>,
    /// This node's place in `peers`.
    me: usize,
    /// Each peer's seed for the scores: a hash of its address, so that the order of the list
    /// does not change who owns what.
    seeds: Vec<u64>,
}

impl Cluster {
    /// The cluster of `peers` with this node at `me`, or why it cannot be: no peers, an
    /// index outside the list, an address that is not `host:port`, or one given twice.
    pub fn new(peers: Vec<String>, me: usize) -> Result<Cluster, String> {
        if peers.is_empty() {
            return Err("--cluster.index needs the peers' addresses (--cluster.peer, one per node)".into());
        }
        if me >= peers.len() {
            return Err(format!(
                "--cluster.index={me} is outside the {} peers given (the first is 0)",
                peers.len()
            ));
        }
        for (i, p) in peers.iter().enumerate() {
            let port = p.rsplit_once(':').map(|(host, port)| (host, port.parse::<u16>()));
            if !matches!(port, Some((host, Ok(_))) if !host.is_empty()) {
                return Err(format!("--cluster.peer={p}: expected host:port"));
            }
            if peers[..i].contains(p) {
                return Err(format!("--cluster.peer={p} is given twice"));
            }
        }
        let seeds = peers.iter().map(|p| xxhash_rust::xxh3::xxh3_64(p.as_bytes())).collect();
        Ok(Cluster { peers, me, seeds })
    }

    /// The cluster `path` lists (one `host:port` a line; blank lines and `#` comments
    /// ignored), with this node the one listed as `me`.
    pub fn from_file(path: &std::path::Path, me: &str) -> Result<Cluster, String> {
        let file = path.display();
        let text = std::fs::read_to_string(path).map_err(|e| format!("--cluster.peers-file={file}: {e}"))?;
        let peers: Vec<String> = text
            .lines()
            .map(|l| l.split('#').next().unwrap_or("").trim())
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect();
        let index = peers.iter().position(|p| p == me).ok_or_else(|| {
            format!("--cluster.peers-file={file} does not list this node (--cluster.advertise-address={me})")
        })?;
        Cluster::new(peers, index).map_err(|e| format!("--cluster.peers-file={file}: {e}"))
    }

    /// Every node's address, this one's included.
    pub fn peers(&self) -> &[String] {
        &self.peers
    }

    /// The other nodes' addresses.
    pub fn others(&self) -> impl Iterator<Item = &str> {
        self.peers.iter().enumerate().filter(|(i, _)| *i != self.me).map(|(_, p)| p.as_str())
    }

    /// This node's address.
    pub fn me(&self) -> &str {
        &self.peers[self.me]
    }

    /// The node that owns `key` (a stable hash of what is placed, such as a target's labels).
    pub fn owner(&self, key: u64) -> usize {
        // ties (never in practice) go to the first peer, on every node alike
        (0..self.peers.len()).max_by_key(|&i| (score(self.seeds[i], key), std::cmp::Reverse(i))).unwrap_or(0)
    }

    /// Every node, from the owner of `key` down: where its copies go, and who takes one when
    /// a node before is down.
    pub fn ranking(&self, key: u64) -> Vec<usize> {
        let mut nodes: Vec<usize> = (0..self.peers.len()).collect();
        nodes.sort_by_key(|&i| (std::cmp::Reverse(score(self.seeds[i], key)), i));
        nodes
    }

    /// This node's place in the peer list.
    pub fn index(&self) -> usize {
        self.me
    }

    /// Whether this node owns `key`.
    pub fn owns(&self, key: u64) -> bool {
        self.owner(key) == self.me
    }
}

/// A peer's score for a key: the key hashed with the peer's seed (xxh3), so that each peer
/// wins an equal share of keys, whatever the keys are.
fn score(seed: u64, key: u64) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(&key.to_le_bytes(), seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(n: usize, me: usize) -> Cluster {
        Cluster::new((0..n).map(|i| format!("node-{i}:9090")).collect(), me).unwrap()
    }

    /// Every node names the same owner for a key, and exactly one node owns it.
    #[test]
    fn every_node_agrees_on_the_owner() {
        let nodes: Vec<Cluster> = (0..3).map(|me| cluster(3, me)).collect();
        for key in (0..10_000u64).map(|k| k.wrapping_mul(0x2545_F491_4F6C_DD1D)) {
            let owners: Vec<usize> = nodes.iter().map(|c| c.owner(key)).collect();
            assert!(owners.windows(2).all(|w| w[0] == w[1]), "{owners:?}");
            assert_eq!(nodes.iter().filter(|c| c.owns(key)).count(), 1);
        }
    }

    /// Keys spread evenly, and a fourth node takes about a quarter of them, each from the
    /// node that held it, moving no other.
    #[test]
    fn a_new_peer_takes_its_share_and_moves_nothing_else() {
        let (three, four) = (cluster(3, 0), cluster(4, 0));
        let keys: Vec<u64> = (0..30_000u64).map(|k| k.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 77).collect();
        let mut shares = [0usize; 3];
        let mut moved = 0;
        for &key in &keys {
            let before = three.owner(key);
            shares[before] += 1;
            let after = four.owner(key);
            if after != before {
                assert_eq!(after, 3, "a key moved between the old nodes");
                moved += 1;
            }
        }
        for share in shares {
            assert!((9_000..11_000).contains(&share), "uneven shares: {shares:?}");
        }
        assert!((6_500..8_500).contains(&moved), "{moved} of 30,000 keys moved");
    }

    /// The order of the peer list does not change who owns a key.
    #[test]
    fn the_order_of_the_peers_does_not_matter() {
        let a = Cluster::new(vec!["a:1".into(), "b:2".into(), "c:3".into()], 0).unwrap();
        let b = Cluster::new(vec!["c:3".into(), "a:1".into(), "b:2".into()], 1).unwrap();
        for key in 0..1_000u64 {
            assert_eq!(a.peers()[a.owner(key)], b.peers()[b.owner(key)]);
        }
    }

    /// A ranking starts with the owner and holds every node once.
    #[test]
    fn a_ranking_starts_with_the_owner() {
        let c = cluster(5, 2);
        for key in 0..1_000u64 {
            let ranking = c.ranking(key);
            assert_eq!(ranking[0], c.owner(key));
            let mut sorted = ranking.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..5).collect::<Vec<_>>());
        }
    }

    #[test]
    fn bad_peer_lists_are_refused() {
        assert!(Cluster::new(vec![], 0).is_err());
        assert!(Cluster::new(vec!["a:1".into()], 1).is_err());
        assert!(Cluster::new(vec!["a".into()], 0).is_err());
        assert!(Cluster::new(vec![":1".into()], 0).is_err());
        assert!(Cluster::new(vec!["a:1".into(), "a:1".into()], 0).is_err());
        assert!(Cluster::new(vec!["a:1".into(), "[::1]:2".into()], 1).is_ok());
    }
}
