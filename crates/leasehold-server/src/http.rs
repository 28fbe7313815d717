//! The node's metrics and health endpoint, plain HTTP on
//! `NodeConfig::metrics_listen`:
//!
//! - `GET /metrics`: every metric of [`crate::metrics`] in the
//!   Prometheus/OpenMetrics text format; the gauges are read from their
//!   sources at each scrape.
//! - `GET /healthz`: 200 while the process runs and its Raft core is
//!   running, else 503 (also after a storage failure: fail-stop).
//! - `GET /readyz`: 200 when this node serves as leader, or is a follower
//!   that knows a current leader; else 503. The body is one line saying why.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use leasehold_raft::store::{LogStore, StateMachineStore};
use leasehold_raft::{NodeId, Raft};
use openraft::ServerState;
use tokio::net::TcpListener;

use crate::lessor::{Lessor, Serving};
use crate::metrics::{Metrics, Observed, CONTENT_TYPE};
use crate::shutdown::ShutdownSignal;

/// Content type of the health answers.
const TEXT: &str = "text/plain; charset=utf-8";

/// What the endpoint reads: the node's metrics and their sources.
pub struct Probe {
    /// This node.
    pub node_id: NodeId,
    /// Term, leader, applied index, whether the core runs.
    pub raft: Raft,
    /// Sessions, leases, snapshot measurements.
    pub state: StateMachineStore,
    /// Committed index.
    pub log_store: LogStore,
    /// Serving state and failover grace.
    pub lessor: Arc<Lessor>,
    /// The registry and its counters.
    pub metrics: Arc<Metrics>,
}

impl Probe {
    /// Reads every gauge's source now.
    pub async fn observe(&self) -> Observed {
        let committed = self.log_store.committed_index().await;
        let (term, leader_id, applied_index) = {
            let m = self.raft.metrics();
            let m = m.borrow();
            (
                m.current_term,
                m.current_leader.unwrap_or(0),
                m.last_applied.map_or(0, |l| l.index),
            )
        };
        // O(resources) under the read lock, like `Status`: scrapes are rare.
        let (sessions, leases) = self.state.read(|s| {
            (
                s.session_count() as u64,
                s.resources().map(|(_, r)| r.holders.len() as u64).sum(),
            )
        });
        let snapshot = self.state.snapshot_stats();
        Observed {
            sessions,
            leases,
            term,
            leader_id,
            commit_index: committed.max(applied_index),
            applied_index,
            serving: Some(self.lessor.serving()),
            snapshot_bytes: snapshot.size_bytes,
            snapshot_build: snapshot.last_build,
            snapshots_built: snapshot.built,
        }
    }

    /// Whether the Raft core runs; the error says why not.
    pub fn health(&self) -> Result<(), String> {
        if let Some(reason) = self.lessor.storage_failure() {
            return Err(format!("storage failed (fail-stop): {reason}"));
        }
        let m = self.raft.metrics();
        let m = m.borrow();
        if let Err(fatal) = &m.running_state {
            return Err(format!("raft core stopped: {fatal}"));
        }
        if m.state == ServerState::Shutdown {
            return Err("raft core shut down".into());
        }
        Ok(())
    }

    /// Whether this node is ready for clients: a serving leader, or a
    /// follower that knows a current leader. Both answers say why.
    pub fn readiness(&self) -> Result<String, String> {
        self.health()?;
        match self.lessor.serving() {
            Serving::Serving => Ok("leader, serving".into()),
            Serving::FailoverGrace { remaining } => Ok(format!(
                "leader, serving (failover grace: {} ms left)",
                remaining.as_millis()
            )),
            Serving::WaitingForQuorum => {
                Err("leader not confirmed by a quorum yet (leader lease not valid)".into())
            }
            Serving::ShuttingDown => Err("node shutting down".into()),
            Serving::StorageFailed => Err(format!(
                "storage failed (fail-stop): {}",
                self.lessor.storage_failure().unwrap_or("unknown")
            )),
            Serving::Follower => {
                let leader = self.raft.metrics().borrow().current_leader;
                match leader {
                    Some(l) if l != self.node_id => Ok(format!("follower of leader {l}")),
                    _ => Err("no leader known (election under way, or cut off from peers)".into()),
                }
            }
        }
    }
}

/// A one-line text answer.
fn text(status: StatusCode, line: String) -> Response {
    (status, [(header::CONTENT_TYPE, TEXT)], format!("{line}\n")).into_response()
}

/// `GET /metrics`: reads every gauge's source, then encodes the registry.
async fn metrics(State(probe): State<Arc<Probe>>) -> Response {
    let observed = probe.observe().await;
    probe.metrics.refresh(&observed);
    match probe.metrics.encode() {
        Ok(body) => (StatusCode::OK, [(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response(),
        Err(error) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding metrics failed: {error}"),
        ),
    }
}

/// `GET /healthz`: see [`Probe::health`].
async fn healthz(State(probe): State<Arc<Probe>>) -> Response {
    match probe.health() {
        Ok(()) => text(StatusCode::OK, "ok".into()),
        Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, why),
    }
}

/// `GET /readyz`: see [`Probe::readiness`].
async fn readyz(State(probe): State<Arc<Probe>>) -> Response {
    match probe.readiness() {
        Ok(why) => text(StatusCode::OK, why),
        Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, why),
    }
}

/// The endpoint's routes.
pub fn router(probe: Arc<Probe>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(probe)
}

/// Serves the endpoint on `listener` until `shutdown` fires.
pub async fn serve(
    listener: TcpListener,
    probe: Arc<Probe>,
    shutdown: ShutdownSignal,
) -> std::io::Result<()> {
    let node_id = probe.node_id;
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(node_id, %addr, "metrics endpoint listening");
    }
    axum::serve(listener, router(probe))
        .with_graceful_shutdown(shutdown.recv())
        .await
}
