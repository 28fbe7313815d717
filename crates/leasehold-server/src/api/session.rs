//! `OpenSession` and `CloseSession`.

use leasehold_core::machine::{validate_client_name, validate_text};
use leasehold_core::{Command, Response as CoreResponse, SessionRef, SessionSecret};
use leasehold_proto::v1 as pb;

use super::error::ApiError;
use super::service::LeaseApi;

impl LeaseApi {
    pub(super) async fn open_session_local(
        &self,
        req: pb::OpenSessionRequest,
    ) -> Result<pb::OpenSessionResponse, ApiError> {
        validate_client_name(&req.client_name)?;
        validate_text("client_name", &req.client_name)?;
        self.state.read(|s| s.config().check_ttl(req.ttl_ms))?;
        let (_, resp) = self
            .propose(Command::OpenSession {
                client_name: req.client_name,
                ttl_ms: req.ttl_ms,
                secret: new_secret(),
                request_id: req.request_id,
            })
            .await?;
        match resp {
            CoreResponse::SessionOpened {
                session,
                ttl_ms,
                secret,
            } => Ok(pb::OpenSessionResponse {
                session_id: session,
                ttl_ms,
                session_secret: secret.as_bytes().to_vec().into(),
                drift_ppm: self.state.read(|s| s.config().drift_ppm),
            }),
            other => Err(ApiError::refused(other)),
        }
    }

    pub(super) async fn close_session_local(
        &self,
        req: pb::CloseSessionRequest,
    ) -> Result<pb::CloseSessionResponse, ApiError> {
        let session = self.owned_session(req.session_id, &req.session_secret)?;
        let (_, resp) = self.propose(Command::CloseSession { session }).await?;
        match resp {
            CoreResponse::SessionClosed { released } => Ok(pb::CloseSessionResponse { released }),
            other => Err(ApiError::refused(other)),
        }
    }

    /// A session named by a client with its secret, checked against the
    /// applied state before anything is proposed (apply checks again).
    pub(super) fn owned_session(&self, id: u64, secret: &[u8]) -> Result<SessionRef, ApiError> {
        match self.state.read(|s| s.session(id).map(|x| x.secret)) {
            None => Err(ApiError::SessionNotFound(id)),
            Some(stored) if !stored.matches(secret) => Err(ApiError::PermissionDenied(id)),
            Some(stored) => Ok(SessionRef { id, secret: stored }),
        }
    }
}

/// 128 random bits from the thread's CSPRNG (seeded by the OS).
pub(super) fn new_secret() -> SessionSecret {
    SessionSecret(rand::random())
}
