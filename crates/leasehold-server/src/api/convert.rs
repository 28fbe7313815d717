//! Conversions between the domain core's types and the wire's.

use leasehold_core::{Event, EventKind, Grant, LeaseConfig, LeaseState};
use leasehold_proto::v1 as pb;

use super::error::mode_to_proto;
use crate::lessor::Lessor;

/// A granted lease for the wire (remaining TTL from the leader's table).
pub fn lease_to_proto(state: &LeaseState, lessor: &Lessor, grant: &Grant) -> pb::Lease {
    let l = &grant.lease;
    pb::Lease {
        resource: grant.resource.clone(),
        session_id: l.session,
        mode: mode_to_proto(l.mode),
        fencing_token: l.token,
        metadata: l.metadata.clone().into(),
        client_name: state
            .session(l.session)
            .map(|s| s.client_name.to_string())
            .unwrap_or_default(),
        remaining_ttl_ms: lessor
            .remaining(l.session)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
        recalled: l.recall.is_some(),
        recall_reason: l
            .recall
            .as_ref()
            .map(|r| r.reason.clone())
            .unwrap_or_default(),
    }
}

/// Holders and waiters of one resource for the wire.
pub fn resource_to_proto(state: &LeaseState, lessor: &Lessor, name: &str) -> pb::ResourceState {
    let res = state.resource(name);
    pb::ResourceState {
        resource: name.to_string(),
        holders: res
            .map(|r| {
                r.holders
                    .values()
                    .map(|l| {
                        let grant = Grant {
                            resource: name.to_string(),
                            lease: l.clone(),
                        };
                        lease_to_proto(state, lessor, &grant)
                    })
                    .collect()
            })
            .unwrap_or_default(),
        waiters: res.map(|r| r.waiters.len() as u32).unwrap_or(0),
    }
}

/// The replicated configuration for the wire.
pub fn config_to_proto(c: &LeaseConfig) -> pb::LeaseConfig {
    pb::LeaseConfig {
        ttl_ms_min: c.ttl_ms_min,
        ttl_ms_max: c.ttl_ms_max,
        drift_ppm: c.drift_ppm,
        grace_margin_ms: c.grace_margin_ms,
        vote_window_ms: c.vote_window_ms,
    }
}

fn event_kind(kind: EventKind) -> i32 {
    use pb::EventKind as K;
    (match kind {
        EventKind::Acquired => K::Acquired,
        EventKind::Released => K::Released,
        EventKind::Expired => K::Expired,
        EventKind::Recalled => K::Recalled,
    }) as i32
}

/// A watch event for the wire.
pub fn event_to_proto(e: &Event) -> pb::WatchEvent {
    pb::WatchEvent {
        revision: e.revision,
        kind: event_kind(e.kind),
        resource: e.resource.clone(),
        session_id: e.session,
        mode: mode_to_proto(e.mode),
        fencing_token: e.token,
    }
}
