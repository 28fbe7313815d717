//! Withdrawing waits whose acquire call ended without an answer.
//!
//! An acquire that queued a wait and then went away (its caller dropped
//! the call, or the `CancelWait` of a timed-out wait failed) must withdraw
//! that wait with `Command::AbandonWait`, or the wait stays queued and a
//! later release grants the resource to a session that never learns of it:
//! the resource is then blocked for as long as that session lives. Only the
//! leader can commit the command, and the node that served the call may
//! have lost leadership meanwhile, so [`Withdrawer`] keeps trying until the
//! applied state shows the wait gone: it proposes the command itself while
//! it leads, and otherwise asks the leader with the `Withdraw` peer RPC.

use std::sync::Arc;
use std::time::Duration;

use leasehold_core::{Command, LogIndex, SessionId};
use leasehold_proto::raft::v1::raft_peer_client::RaftPeerClient;
use leasehold_raft::network::{encode, Withdrawal};
use leasehold_raft::store::StateMachineStore;
use leasehold_raft::tls::NodeTls;
use leasehold_raft::{NodeId, Raft};
use tokio::time::Instant;

use super::forward::known_leader_addr;
use crate::proposer::Proposer;

/// Bound on one attempt (a local proposal or one call to the leader).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// First pause between attempts; it doubles up to [`RETRY_PAUSE_MAX`].
const RETRY_PAUSE_MIN: Duration = Duration::from_millis(100);

/// Longest pause between attempts.
const RETRY_PAUSE_MAX: Duration = Duration::from_secs(1);

/// How long a withdrawal is retried before it is given up (logged as an
/// error). Longer than any election and leader-lease takeover; past it the
/// cluster has no leader for minutes and the session, unrenewed by a
/// client that left, expires and takes the wait with it.
pub const WITHDRAW_RETRY_MS_MAX: u64 = 120_000;

/// Withdraws abandoned waits: locally while this node leads, through the
/// leader otherwise, until the applied state shows the wait gone. Cheap to
/// clone (every waiting acquire holds one).
#[derive(Clone)]
pub struct Withdrawer {
    /// What every clone shares.
    inner: Arc<Inner>,
}

/// The parts of a [`Withdrawer`].
struct Inner {
    /// This node: whether it leads.
    node_id: NodeId,
    /// Who leads, and the leader's peer address.
    raft: Raft,
    /// Local proposals while this node leads.
    proposer: Proposer,
    /// The applied state: whether the wait (or its grant) is still there.
    state: StateMachineStore,
    /// TLS towards peers (`None`: plaintext); the peer port takes node
    /// certificates only.
    tls: Option<NodeTls>,
}

/// One abandoned wait.
#[derive(Debug, Clone)]
pub struct AbandonedCall {
    /// The waiting session.
    pub session: SessionId,
    /// The resource it waited for.
    pub resource: String,
    /// The entry that queued the wait (names it and its grant only).
    pub queued_at: LogIndex,
}

impl Withdrawer {
    /// A withdrawer for this node.
    pub fn new(
        node_id: NodeId,
        raft: Raft,
        proposer: Proposer,
        state: StateMachineStore,
        tls: Option<NodeTls>,
    ) -> Self {
        Withdrawer {
            inner: Arc::new(Inner {
                node_id,
                raft,
                proposer,
                state,
                tls,
            }),
        }
    }

    /// Withdraws `call` in the background, retrying until it is done or
    /// [`WITHDRAW_RETRY_MS_MAX`] passed.
    pub fn spawn(&self, call: AbandonedCall) {
        let this = self.clone();
        tokio::spawn(async move {
            let budget = Duration::from_millis(WITHDRAW_RETRY_MS_MAX);
            if let Err(error) = this.withdraw_within(&call, budget).await {
                tracing::error!(
                    session = call.session,
                    resource = %call.resource,
                    queued_at = call.queued_at,
                    %error,
                    "gave up withdrawing an abandoned wait; it ends with its session"
                );
            }
        });
    }

    /// Withdraws `call`, retrying until the applied state shows it gone or
    /// `budget` passed; the error is the last attempt's.
    pub async fn withdraw_within(
        &self,
        call: &AbandonedCall,
        budget: Duration,
    ) -> Result<(), String> {
        let deadline = Instant::now() + budget;
        let mut pause = RETRY_PAUSE_MIN;
        let mut attempts = 0u32;
        loop {
            if self.is_gone(call) {
                if attempts > 1 {
                    tracing::info!(
                        session = call.session,
                        resource = %call.resource,
                        attempts,
                        "withdrew an abandoned wait"
                    );
                }
                return Ok(());
            }
            attempts += 1;
            // `None`: committed; the next check sees it once applied here.
            let error = self.attempt(call).await.err();
            if let Some(error) = &error {
                tracing::debug!(
                    session = call.session,
                    resource = %call.resource,
                    attempts,
                    %error,
                    "withdrawing an abandoned wait; retrying"
                );
            }
            if Instant::now() + pause > deadline {
                return Err(error.unwrap_or_else(|| {
                    "committed, but not applied on this node in time".to_string()
                }));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(RETRY_PAUSE_MAX);
        }
    }

    /// Whether this node's applied state no longer has the wait nor a lease
    /// granted from it.
    fn is_gone(&self, call: &AbandonedCall) -> bool {
        self.inner.state.read(|s| {
            s.abandoned_wait(call.session, &call.resource, call.queued_at)
                .is_none()
        })
    }

    /// One attempt: propose here while this node leads, else ask the leader.
    async fn attempt(&self, call: &AbandonedCall) -> Result<(), String> {
        let leader = {
            let metrics = self.inner.raft.metrics();
            let m = metrics.borrow();
            known_leader_addr(&m, |n| &n.raft_addr)
        };
        match leader {
            None => Err("no leader is known".to_string()),
            Some((id, _)) if id == self.inner.node_id => {
                let command = Command::AbandonWait {
                    session: call.session,
                    resource: call.resource.clone(),
                    queued_at: call.queued_at,
                };
                match tokio::time::timeout(ATTEMPT_TIMEOUT, self.inner.proposer.propose(command))
                    .await
                {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(error)) => Err(error.to_string()),
                    Err(_) => Err(format!(
                        "not committed within {} ms",
                        ATTEMPT_TIMEOUT.as_millis()
                    )),
                }
            }
            Some((id, raft_addr)) if raft_addr.is_empty() => {
                Err(format!("the leader {id} has no raft address"))
            }
            Some((id, raft_addr)) => self
                .ask_leader(call, &raft_addr)
                .await
                .map_err(|e| format!("leader {id} at {raft_addr}: {e}")),
        }
    }

    /// One `Withdraw` peer call to the leader at `raft_addr`.
    async fn ask_leader(&self, call: &AbandonedCall, raft_addr: &str) -> Result<(), String> {
        let endpoint = leasehold_raft::tls::endpoint(raft_addr, self.inner.tls.as_ref())?
            .connect_timeout(ATTEMPT_TIMEOUT)
            .timeout(ATTEMPT_TIMEOUT)
            .tcp_nodelay(true);
        let request = encode(
            "withdraw request",
            &Withdrawal {
                session: call.session,
                resource: call.resource.clone(),
                queued_at: call.queued_at,
            },
        )
        .map_err(|e| e.to_string())?;
        let exchange = async {
            let channel = endpoint
                .connect()
                .await
                .map_err(|e| format!("refuses connections ({e})"))?;
            RaftPeerClient::new(channel)
                .withdraw(request)
                .await
                .map(|_| ())
                .map_err(|s| s.message().to_string())
        };
        match tokio::time::timeout(ATTEMPT_TIMEOUT, exchange).await {
            Ok(result) => result,
            Err(_) => Err(format!(
                "no answer within {} ms",
                ATTEMPT_TIMEOUT.as_millis()
            )),
        }
    }
}
