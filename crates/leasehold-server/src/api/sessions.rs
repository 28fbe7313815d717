//! `ListSessions`: the open sessions, paged, on the serving leader. Never
//! answers a session's secret.

use leasehold_core::Session;
use leasehold_proto::v1 as pb;

use super::error::ApiError;
use super::request;
use super::service::LeaseApi;
use crate::lessor::Lessor;

/// Default page of `ListSessions`.
pub const SESSIONS_PAGE_DEFAULT: usize = 100;
/// Largest page of `ListSessions`.
pub const SESSIONS_PAGE_MAX: usize = 1_000;

/// A session for the wire: no secret; the remaining TTL from the leader's
/// table.
pub fn session_to_proto(s: &Session, lessor: &Lessor) -> pb::SessionInfo {
    pb::SessionInfo {
        session_id: s.id,
        client_name: s.client_name.to_string(),
        ttl_ms: s.ttl_ms,
        remaining_ttl_ms: lessor
            .remaining(s.id)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0),
        held: s.held.iter().cloned().collect(),
        waiting: s.waiting.iter().cloned().collect(),
        private: s.private,
    }
}

/// The page size a request asks for, checked.
pub(super) fn page_size(asked: u32) -> Result<usize, ApiError> {
    match usize::try_from(asked).unwrap_or(usize::MAX) {
        0 => Ok(SESSIONS_PAGE_DEFAULT),
        n if n > SESSIONS_PAGE_MAX => Err(ApiError::invalid(
            "page_size",
            format!("{n} exceeds the limit of {SESSIONS_PAGE_MAX}"),
        )),
        n => Ok(n),
    }
}

/// The last session id of the previous page (0: from the first).
pub(super) fn page_after(token: &str) -> Result<u64, ApiError> {
    if token.is_empty() {
        return Ok(0);
    }
    token.parse().map_err(|_| {
        ApiError::invalid(
            "page_token",
            format!(
                "{:?} is not a token a previous page returned",
                token.chars().take(64).collect::<String>()
            ),
        )
    })
}

impl LeaseApi {
    pub(super) async fn list_sessions_local(
        &self,
        req: pb::ListSessionsRequest,
    ) -> Result<pb::ListSessionsResponse, ApiError> {
        let (page, after) = request::list_sessions(&req)?;
        Ok(self.state.read(|s| {
            let mut sessions: Vec<&Session> = s.sessions_after(after).take(page + 1).collect();
            let next = if sessions.len() > page {
                sessions.truncate(page);
                sessions
                    .last()
                    .map(|l| l.id.to_string())
                    .unwrap_or_default()
            } else {
                String::new()
            };
            pb::ListSessionsResponse {
                sessions: sessions
                    .iter()
                    .map(|x| session_to_proto(x, &self.lessor))
                    .collect(),
                next_page_token: next,
                revision: s.revision(),
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_checked() {
        assert_eq!(page_size(0).ok(), Some(SESSIONS_PAGE_DEFAULT));
        assert_eq!(page_size(7).ok(), Some(7));
        assert!(matches!(
            page_size(1_001),
            Err(ApiError::InvalidArgument { ref field, .. }) if field == "page_size"
        ));
        assert_eq!(page_after("").ok(), Some(0));
        assert_eq!(page_after("42").ok(), Some(42));
        for bad in ["x", "-1", "4 2"] {
            assert!(
                matches!(
                    page_after(bad),
                    Err(ApiError::InvalidArgument { ref field, .. }) if field == "page_token"
                ),
                "{bad}"
            );
        }
    }
}
