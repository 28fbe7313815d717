//! `OpenSession` and `CloseSession`.

use leasehold_core::{Response as CoreResponse, SessionSecret};
use leasehold_proto::v1 as pb;

use super::error::ApiError;
use super::request;
use super::service::LeaseApi;

impl LeaseApi {
    pub(super) async fn open_session_local(
        &self,
        req: pb::OpenSessionRequest,
    ) -> Result<pb::OpenSessionResponse, ApiError> {
        let secret = new_secret();
        let command = self
            .state
            .read(|s| request::open_session(s, &req, secret))?;
        let (_, resp) = self.propose(command).await?;
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
        let command = self.state.read(|s| request::close_session(s, &req))?;
        let (_, resp) = self.propose(command).await?;
        match resp {
            CoreResponse::SessionClosed { released } => Ok(pb::CloseSessionResponse { released }),
            other => Err(ApiError::refused(other)),
        }
    }
}

/// 128 random bits from the thread's CSPRNG (seeded by the OS).
pub(super) fn new_secret() -> SessionSecret {
    SessionSecret(rand::random())
}
