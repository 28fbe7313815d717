//! What a node starts from, and the openraft configuration derived from it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use leasehold_raft::{LeaseNode, NodeId};

use crate::auth::AuthConfig;
use crate::error::ServerError;
use crate::limits::ApiLimits;

/// One member of the cluster as given on the command line:
/// `ID=RAFT_ADDR,API_ADDR`, e.g. `2=127.0.0.1:7102,127.0.0.1:7002`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSpec {
    /// The member's node id.
    pub id: NodeId,
    /// Where to reach it.
    pub node: LeaseNode,
}

impl FromStr for PeerSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let usage = || format!("peer {s:?} is not of the form ID=RAFT_ADDR,API_ADDR");
        let (id, addrs) = s.split_once('=').ok_or_else(usage)?;
        let id: NodeId = id.trim().parse().map_err(|_| usage())?;
        let (raft, api) = addrs.split_once(',').ok_or_else(usage)?;
        if raft.trim().is_empty() || api.trim().is_empty() {
            return Err(usage());
        }
        Ok(PeerSpec {
            id,
            node: LeaseNode {
                raft_addr: raft.trim().to_string(),
                api_addr: api.trim().to_string(),
            },
        })
    }
}

/// The PEM files of a node's TLS: the cluster CA and the node's own
/// certificate and key (see `leasehold_raft::tls`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The cluster CA's certificate: peers' and clients' certificates must
    /// be signed by it, and so must the servers this node dials.
    pub ca_cert: PathBuf,
    /// This node's certificate, with SANs for the hosts it is dialled at
    /// (IP SAN for an IP address, DNS SAN for a name).
    pub cert: PathBuf,
    /// This node's private key (keep it 0600).
    pub key: PathBuf,
}

/// Raft timing. Followers refuse to vote for `election_timeout_ms_max` after
/// hearing from a leader; the lease service builds its leader lease on that.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RaftTiming {
    /// Leader heartbeat period.
    pub heartbeat_ms: u64,
    /// Lower bound of the randomized election timeout.
    pub election_timeout_ms_min: u64,
    /// Upper bound of the randomized election timeout.
    pub election_timeout_ms_max: u64,
}

impl Default for RaftTiming {
    fn default() -> Self {
        RaftTiming {
            heartbeat_ms: 100,
            election_timeout_ms_min: 300,
            election_timeout_ms_max: 600,
        }
    }
}

/// Everything a node needs to start.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This node's id; must be one of `peers` unless the node joins
    /// (`bootstrap` false), e.g. under a fresh id.
    pub node_id: NodeId,
    /// Where the Raft peer service listens.
    pub raft_listen: SocketAddr,
    /// Where the client API listens (advertised to peers for forwarding).
    pub api_listen: SocketAddr,
    /// Where the HTTP metrics and health endpoint (`/metrics`, `/healthz`,
    /// `/readyz`) listens; `None`: not served.
    pub metrics_listen: Option<SocketAddr>,
    /// Every member of the initial cluster, this node included.
    pub peers: Vec<PeerSpec>,
    /// Directory of the sled database; created if missing.
    pub data_dir: PathBuf,
    /// Raft timing.
    pub timing: RaftTiming,
    /// Whether a pristine store may found a new cluster with `peers` (false
    /// for `--join`). It does so only once every other member answered and
    /// none has committed anything; a formed cluster is never initialized
    /// again (see [`crate::admission`]). Every founding member initializes
    /// with the same list: openraft accepts identical initializations.
    pub bootstrap: bool,
    /// Build a snapshot after this many applied entries.
    pub snapshot_every_entries: u64,
    /// Entries kept in the log behind the latest snapshot (so lagging
    /// followers catch up from the log, not a snapshot).
    pub log_entries_kept: u64,
    /// **Test only**: skews the clock this node's lease decisions read, in
    /// parts per million (+50_000 = 5% fast). 0 in production. Chaos tests
    /// use it to show that drift within ρ is safe and drift beyond is not.
    pub unsafe_test_clock_rate_ppm: i64,
    /// TLS of every gRPC port and channel: mutual TLS between peers, TLS
    /// for the client API. `None` runs plaintext, which needs `plaintext`.
    pub tls: Option<TlsFiles>,
    /// Explicitly run without TLS. A node with neither `tls` nor this
    /// refuses to start, so that plaintext is never an accident; it logs a
    /// warning at start.
    pub plaintext: bool,
    /// Who may call the client API: principals with bearer tokens, or an
    /// explicitly open API. The default (no principals, not open) refuses
    /// to start, so an open API is always a decision (ADR 0005).
    pub auth: AuthConfig,
    /// What clients may hold open on this node (connections, streams,
    /// waiters) and idle timeouts; see [`crate::limits`].
    pub limits: ApiLimits,
}

/// One problem of a [`NodeConfig`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The [`NodeConfig`] field at fault (`node_id`, `peers`, `heartbeat_ms`, …).
    pub field: &'static str,
    /// What is wrong with it.
    pub message: String,
}

impl std::fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Why a node with neither TLS nor plaintext refuses to start.
pub const NEITHER_TLS_NOR_PLAINTEXT: &str = "neither TLS nor plaintext is configured: \
give the TLS files (tls.ca_cert, tls.cert, tls.key; --tls-ca-cert, --tls-cert, --tls-key; \
`leasehold certs init` makes them) or run without TLS explicitly (tls.plaintext = true, --plaintext)";

/// Limits on the timing values a node accepts.
const HEARTBEAT_MS_MIN: u64 = 10;

impl NodeConfig {
    /// A config with defaults for everything but identity and addresses.
    pub fn new(
        node_id: NodeId,
        raft_listen: SocketAddr,
        api_listen: SocketAddr,
        peers: Vec<PeerSpec>,
        data_dir: PathBuf,
    ) -> Self {
        NodeConfig {
            node_id,
            raft_listen,
            api_listen,
            metrics_listen: None,
            peers,
            data_dir,
            timing: RaftTiming::default(),
            bootstrap: true,
            snapshot_every_entries: 10_000,
            log_entries_kept: 1_000,
            unsafe_test_clock_rate_ppm: 0,
            tls: None,
            plaintext: false,
            auth: AuthConfig::default(),
            limits: ApiLimits::default(),
        }
    }

    /// This node's own entry in `peers`.
    pub fn me(&self) -> Option<&PeerSpec> {
        self.peers.iter().find(|p| p.id == self.node_id)
    }

    /// Checks the configuration; the error names the field (the first
    /// problem when there are several: [`NodeConfig::problems`] lists all).
    pub fn validate(&self) -> Result<(), ServerError> {
        match self.problems().into_iter().next() {
            Some(p) => Err(ServerError::Config(p.to_string())),
            None => Ok(()),
        }
    }

    /// Every problem of the configuration, each naming its field, so that a
    /// front end can report them all at once.
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        let mut bad = |field: &'static str, message: String| {
            out.push(ConfigProblem { field, message });
        };
        if self.node_id == 0 {
            bad("node_id", "must be non-zero".into());
        }
        if self.peers.is_empty() {
            bad("peers", "at least one member is needed".into());
        } else if self.bootstrap && self.me().is_none() {
            bad(
                "peers",
                format!(
                    "this node's id {} is not in the peer list (a node that is not a founding member needs --join)",
                    self.node_id
                ),
            );
        }
        let mut ids: Vec<_> = self.peers.iter().map(|p| p.id).collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.len() != self.peers.len() {
            bad("peers", "duplicate node id".into());
        }
        if self.peers.iter().any(|p| p.id == 0) {
            bad("peers", "node ids must be non-zero".into());
        }
        let t = &self.timing;
        if t.heartbeat_ms < HEARTBEAT_MS_MIN {
            bad(
                "heartbeat_ms",
                format!(
                    "must be at least {HEARTBEAT_MS_MIN} ms (is {} ms)",
                    t.heartbeat_ms
                ),
            );
        }
        if t.election_timeout_ms_min < 2 * t.heartbeat_ms {
            bad(
                "election_timeout_ms_min",
                format!(
                    "must be at least 2 × heartbeat_ms ({} ms < 2 × {} ms)",
                    t.election_timeout_ms_min, t.heartbeat_ms
                ),
            );
        }
        if t.election_timeout_ms_max <= t.election_timeout_ms_min {
            bad(
                "election_timeout_ms_max",
                format!(
                    "must be greater than election_timeout_ms_min ({} ms ≤ {} ms)",
                    t.election_timeout_ms_max, t.election_timeout_ms_min
                ),
            );
        }
        if self.snapshot_every_entries == 0 {
            bad("snapshot_every_entries", "must be positive".into());
        }
        match (&self.tls, self.plaintext) {
            (None, false) => bad("tls", NEITHER_TLS_NOR_PLAINTEXT.into()),
            (Some(_), true) => bad(
                "plaintext",
                "cannot be combined with TLS certificates: choose one".into(),
            ),
            _ => {}
        }
        for (field, message) in self.auth.problems() {
            bad(field, message);
        }
        out.extend(self.limits.problems());
        out
    }

    /// The openraft configuration for this node.
    pub fn raft_config(&self) -> Result<openraft::Config, ServerError> {
        let t = &self.timing;
        let config = openraft::Config {
            cluster_name: "leasehold".into(),
            heartbeat_interval: t.heartbeat_ms,
            election_timeout_min: t.election_timeout_ms_min,
            election_timeout_max: t.election_timeout_ms_max,
            // Each snapshot chunk is one RPC: 1 MiB stays far below the
            // transport's message limit, and 2 s per chunk tolerates a busy peer.
            snapshot_max_chunk_size: 1024 * 1024,
            install_snapshot_timeout: 2_000,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_every_entries),
            max_in_snapshot_log_to_keep: self.log_entries_kept,
            max_payload_entries: 256,
            ..Default::default()
        };
        config
            .validate()
            .map_err(|e| ServerError::Config(format!("raft: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_spec_parses_and_rejects() {
        let p: PeerSpec = "2=127.0.0.1:7102,127.0.0.1:7002".parse().expect("parses");
        assert_eq!(p.id, 2);
        assert_eq!(p.node.raft_addr, "127.0.0.1:7102");
        assert_eq!(p.node.api_addr, "127.0.0.1:7002");
        for bad in ["", "x=a,b", "1=a", "1=,b", "1:a,b"] {
            assert!(bad.parse::<PeerSpec>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn validate_names_the_field() {
        let addr: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        let peers = vec!["1=a:1,b:1".parse().expect("peer")];
        let mut c = NodeConfig::new(9, addr, addr, peers, "/tmp/x".into());
        c.plaintext = true;
        c.auth = AuthConfig::open();
        let e = c.validate().expect_err("id not in peers").to_string();
        assert!(e.contains("peers"), "{e}");
        // A joining node (a fresh id) needs only the members to ask.
        c.bootstrap = false;
        c.validate().expect("a joining node outside the peer list");
        c.bootstrap = true;
        c.node_id = 1;
        c.validate().expect("valid");
        c.timing.election_timeout_ms_max = c.timing.election_timeout_ms_min;
        let e = c.validate().expect_err("bad timing").to_string();
        assert!(e.contains("election_timeout_ms_max"), "{e}");
    }

    #[test]
    fn problems_lists_every_field_at_fault() {
        let addr: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        let peers = vec!["1=a:1,b:1".parse().expect("peer")];
        let mut c = NodeConfig::new(0, addr, addr, peers, "/tmp/x".into());
        c.plaintext = true;
        c.bootstrap = false;
        c.timing.heartbeat_ms = 1;
        c.snapshot_every_entries = 0;
        let fields: Vec<_> = c.problems().iter().map(|p| p.field).collect();
        assert_eq!(
            fields,
            ["node_id", "heartbeat_ms", "snapshot_every_entries", "auth"],
            "no principals and not open: refused"
        );
    }

    #[test]
    fn transport_security_must_be_chosen() {
        let addr: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        let peers = vec!["1=a:1,b:1".parse().expect("peer")];
        let mut c = NodeConfig::new(1, addr, addr, peers, "/tmp/x".into());
        // What is under test is transport security, not auth.
        c.auth = AuthConfig::open();
        let e = c.validate().expect_err("neither").to_string();
        assert!(e.contains("tls") && e.contains("plaintext"), "{e}");
        c.plaintext = true;
        c.validate().expect("explicit plaintext");
        c.tls = Some(TlsFiles {
            ca_cert: "ca.pem".into(),
            cert: "node.pem".into(),
            key: "node-key.pem".into(),
        });
        let fields: Vec<_> = c.problems().iter().map(|p| p.field).collect();
        assert_eq!(fields, ["plaintext"]);
        c.plaintext = false;
        c.validate().expect("TLS");
    }
}
