//! Leasehold's replication layer: openraft storage on sled and the Raft peer
//! transport over tonic.
//!
//! # Layout
//! - [`types`]: the openraft type configuration ([`TypeConfig`], [`LeaseNode`]).
//! - [`store`]: sled-backed log store and persisted state machine (storage-v2),
//!   typed key spaces, one serialized flush path.
//! - [`network`]: Raft peer transport over tonic: [`network::PeerNetwork`]
//!   (client, one cached channel per peer) and [`network::serve_peer`] (server).
//! - [`tls`]: a node's TLS material ([`tls::NodeTls`]): mutual TLS between
//!   peers, TLS for the client API, endpoints for outgoing channels.
//! - [`identity`]: what a peer's certificate says (its subject CN; node
//!   certificates `leasehold node <id>`).

pub mod identity;
pub mod network;
pub mod store;
pub mod tls;
pub mod types;

pub use types::{LeaseNode, NodeId, Raft, TypeConfig};

/// `tracing` target of the per-stage timings of the write path (TRACE
/// level, one event per stage: `stage`, `elapsed_us` and sizes):
/// `peer_rpc` (leader → follower round trip), `follower_append`,
/// `flush` (with its queueing), `apply`, and the server's `propose`. Turn
/// on with `RUST_LOG=leasehold::stage=trace`; `docs/adr/0003-group-commit.md`
/// shows how they were read.
pub const STAGE_TARGET: &str = "leasehold::stage";
