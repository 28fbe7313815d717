//! Generated gRPC code for Leasehold.
//!
//! The protos live at the workspace top in `proto/` and are compiled by this
//! crate's build script with a vendored `protoc`.
//!
//! # Layout
//! - [`raft::v1`]: the Raft peer service (`leasehold.raft.v1.RaftPeer`), used
//!   only between members of one cluster. Its messages carry postcard-encoded
//!   openraft values; see `proto/leasehold/raft/v1/raft.proto`.
//! - [`v1`]: the client API (`leasehold.v1.Leasehold`): sessions, keepalive,
//!   acquire/release, get/list/watch, recall, status. See
//!   `proto/leasehold/v1/lease.proto`.
//! - [`gfs::v1`]: GFS-style chunk primaries on Leasehold
//!   (`leasehold.gfs.v1.Master`, `leasehold.gfs.v1.Chunkserver`). See
//!   `proto/leasehold/gfs/v1/gfs.proto`.

/// Raft peer protocol (`leasehold.raft.*`).
pub mod raft {
    /// Version 1 of the Raft peer protocol: `RaftPeer` client, server and the
    /// `RaftPayload` message.
    pub mod v1 {
        #![allow(missing_docs)]
        #![allow(clippy::all, clippy::pedantic)]
        tonic::include_proto!("leasehold.raft.v1");
    }
}

/// Client API, version 1 (`leasehold.v1`): the `Leasehold` service client,
/// server and messages.
pub mod v1 {
    #![allow(missing_docs)]
    #![allow(clippy::all, clippy::pedantic)]
    tonic::include_proto!("leasehold.v1");
}

/// GFS-style chunk primaries (`leasehold.gfs.*`).
pub mod gfs {
    /// Version 1: the `Master` and `Chunkserver` services and their messages.
    pub mod v1 {
        #![allow(missing_docs)]
        #![allow(clippy::all, clippy::pedantic)]
        tonic::include_proto!("leasehold.gfs.v1");
    }
}

/// Response metadata key carrying the leader's client API address when a
/// follower answers `UNAVAILABLE` instead of forwarding.
pub const LEADER_METADATA_KEY: &str = "x-leasehold-leader";

/// Request metadata key counting how many times a request was forwarded
/// between nodes (bounded by [`FORWARD_HOPS_MAX`]).
pub const HOPS_METADATA_KEY: &str = "x-leasehold-hops";

/// Most times a request is forwarded before a node answers `UNAVAILABLE`.
pub const FORWARD_HOPS_MAX: u32 = 2;

/// Largest request message a Leasehold node decodes, in bytes (1 MiB). The
/// largest legitimate request, a keepalive naming 10,000 sessions with
/// their secrets, is about 300 KB. A larger one is refused with
/// `RESOURCE_EXHAUSTED` naming `request_bytes_max`; clients refuse to send
/// one in the first place.
pub const REQUEST_BYTES_MAX: usize = 1024 * 1024;

/// An error and its sources on one line (`a: b: c`), each source once:
/// transport errors (tonic, hyper, rustls) hide their cause in sources,
/// and every side of the wire reports them this way.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}
