//! Leasehold's replication layer: openraft storage on sled and the Raft peer
//! transport over tonic.
//!
//! # Layout
//! - [`types`]: the openraft type configuration ([`TypeConfig`], [`LeaseNode`]).
//! - [`store`]: sled-backed log store and persisted state machine (storage-v2),
//!   typed key spaces, one serialized flush path.
//! - [`network`]: Raft peer transport over tonic: [`network::PeerNetwork`]
//!   (client, one cached channel per peer) and [`network::serve_peer`] (server).

pub mod network;
pub mod store;
pub mod types;

pub use types::{LeaseNode, NodeId, Raft, TypeConfig};
