//! Who is calling, and may they: the check every call passes at the node
//! that receives it, before it is routed, proposed or forwarded.
//!
//! [`identity`] is the one function that says who a request comes from.
//! Today it reads the bearer token (`authorization: Bearer <token>`
//! metadata). A client-certificate (mTLS) identity would be added there:
//! map the verified peer certificate of the request (tonic's
//! `Request::peer_certs`) to a [`leasehold_server::Principal`] by its
//! subject, before falling back to the token; everything after the
//! identity (roles, prefixes, statuses) stays as it is. See ADR 0005.

use tonic::metadata::MetadataMap;
use tonic::Request;

use super::error::ApiError;
use super::service::LeaseApi;
use crate::auth::{AuthConfig, Authenticated, Need, Unauthenticated};

/// The metadata key of the bearer token (HTTP/2 header `authorization`).
pub const AUTHORIZATION_METADATA_KEY: &str = "authorization";

/// The scheme of a bearer token, matched without regard to case (RFC 6750).
const BEARER_SCHEME: &str = "bearer ";

/// The identity of a request: the principal its credentials name, or
/// [`Authenticated::Open`] when the API is open.
pub fn identity<'a, T>(
    auth: &'a AuthConfig,
    request: &Request<T>,
) -> Result<Authenticated<'a>, Unauthenticated> {
    if !auth.enabled() {
        return Ok(Authenticated::Open);
    }
    let token = bearer_token(request.metadata())?;
    auth.authenticate(token)
}

/// The token of the `authorization` metadata (`None`: absent).
fn bearer_token(metadata: &MetadataMap) -> Result<Option<&str>, Unauthenticated> {
    let Some(value) = metadata.get(AUTHORIZATION_METADATA_KEY) else {
        return Ok(None);
    };
    let text = value.to_str().map_err(|_| Unauthenticated::Malformed)?;
    match text.get(..BEARER_SCHEME.len()) {
        Some(scheme) if scheme.eq_ignore_ascii_case(BEARER_SCHEME) => {
            let token = text[BEARER_SCHEME.len()..].trim();
            if token.is_empty() {
                Err(Unauthenticated::Malformed)
            } else {
                Ok(Some(token))
            }
        }
        _ => Err(Unauthenticated::Malformed),
    }
}

impl LeaseApi {
    /// Refuses `request` unless its caller may make `call`, which needs
    /// `need`: `UNAUTHENTICATED` without a known identity,
    /// `PERMISSION_DENIED` (naming principal, call and what it needs) when
    /// the role or prefixes do not allow it. Nothing has happened yet when
    /// it refuses.
    pub(super) fn authorize<T>(
        &self,
        request: &Request<T>,
        call: &'static str,
        need: Need<'_>,
    ) -> Result<(), ApiError> {
        let principal = match identity(&self.auth, request) {
            Ok(Authenticated::Open) => return Ok(()),
            Ok(Authenticated::As(p)) => p,
            Err(e) => {
                self.metrics.auth_unauthenticated();
                tracing::info!(call, reason = %e, "call refused: unauthenticated");
                return Err(ApiError::Unauthenticated(e));
            }
        };
        principal.check(call, need).map_err(|denied| {
            self.metrics.auth_denied();
            tracing::info!(call, principal = %principal.name, needs = %denied.needs, "call refused: permission denied");
            ApiError::NotAllowed(denied)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Principal, Role, TokenDigest};

    fn request(authorization: Option<&str>) -> Request<()> {
        let mut r = Request::new(());
        if let Some(a) = authorization {
            r.metadata_mut().insert(
                AUTHORIZATION_METADATA_KEY,
                a.parse().expect("ascii metadata"),
            );
        }
        r
    }

    #[test]
    fn the_identity_is_the_bearer_tokens_principal() {
        let auth = AuthConfig {
            principals: vec![Principal {
                name: "ops".into(),
                token_sha256: TokenDigest::of("t0k"),
                role: Role::Admin,
                prefixes: Vec::new(),
            }],
            open: false,
        };
        for header in ["Bearer t0k", "bearer t0k", "BEARER  t0k "] {
            match identity(&auth, &request(Some(header))) {
                Ok(Authenticated::As(p)) => assert_eq!(p.name, "ops"),
                other => panic!("{header:?}: {other:?}"),
            }
        }
        assert_eq!(
            identity(&auth, &request(None)),
            Err(Unauthenticated::Missing)
        );
        assert_eq!(
            identity(&auth, &request(Some("Basic b3BzOnQwaw=="))),
            Err(Unauthenticated::Malformed)
        );
        assert_eq!(
            identity(&auth, &request(Some("Bearer "))),
            Err(Unauthenticated::Malformed)
        );
        assert_eq!(
            identity(&auth, &request(Some("Bearer nope"))),
            Err(Unauthenticated::Unknown)
        );
        assert_eq!(
            identity(&AuthConfig::open(), &request(None)),
            Ok(Authenticated::Open)
        );
    }
}
