//! Who is calling, and may they: the check every call passes at the node
//! that receives it, before it is routed, proposed or forwarded.
//!
//! [`identity`] is the one function that says who a request comes from,
//! in this order:
//! 1. forwarded-principal metadata ([`PRINCIPAL_METADATA_KEY`]) over a
//!    connection without a node certificate of the cluster: refused
//!    (only nodes forward identities; a client cannot claim one);
//! 2. a bearer token (`authorization: Bearer <token>`) decides;
//! 3. forwarded-principal metadata from a node (a connection made with a
//!    node certificate, subject CN `leasehold node <id>`) names the
//!    principal: the follower authenticated the caller by its client
//!    certificate, which the leader cannot see;
//! 4. a client certificate (verified against the cluster CA in the TLS
//!    handshake): its subject CN names the principal (`cert_cn`);
//! 5. nothing: `UNAUTHENTICATED` (missing bearer token).
//!
//! Everything after the identity (roles, prefixes, statuses) is the same
//! whichever way the caller was known. See ADR 0005.

use leasehold_raft::identity::{self, PeerIdentity};
use tonic::metadata::MetadataMap;
use tonic::transport::CertificateDer;
use tonic::Request;

use super::error::ApiError;
use super::service::LeaseApi;
use crate::auth::{AuthConfig, Authenticated, Need, Unauthenticated, Via};
use crate::conn::ConnInfo;

/// The metadata key of the bearer token (HTTP/2 header `authorization`).
pub const AUTHORIZATION_METADATA_KEY: &str = "authorization";

/// The metadata key a node forwarding a certificate-authenticated call
/// names the principal in (binary metadata: the UTF-8 name). Trusted only
/// from a connection with a node certificate of the cluster.
pub const PRINCIPAL_METADATA_KEY: &str = "x-leasehold-principal-bin";

/// The scheme of a bearer token, matched without regard to case (RFC 6750).
const BEARER_SCHEME: &str = "bearer ";

/// The identity of a request: the principal its credentials name, or
/// [`Authenticated::Open`] when the API is open.
pub fn identity<'a, T>(
    auth: &'a AuthConfig,
    request: &Request<T>,
) -> Result<Authenticated<'a>, Unauthenticated> {
    let certs = identity::peer_certs::<T, ConnInfo>(request);
    identity_of(
        auth,
        request.metadata(),
        certs.as_deref().map(Vec::as_slice),
    )
}

/// [`identity`] from the request's metadata and the client certificates
/// of its connection (leaf first; verified by the TLS handshake).
pub fn identity_of<'a>(
    auth: &'a AuthConfig,
    metadata: &MetadataMap,
    certs: Option<&[CertificateDer<'static>]>,
) -> Result<Authenticated<'a>, Unauthenticated> {
    if !auth.enabled() {
        return Ok(Authenticated::Open);
    }
    let peer = identity::identify(certs);
    let forwarded = metadata.get_bin(PRINCIPAL_METADATA_KEY);
    if forwarded.is_some() && !matches!(peer, PeerIdentity::Node(_)) {
        return Err(Unauthenticated::ForwardedNotFromNode);
    }
    if let Some(token) = bearer_token(metadata)? {
        return auth.authenticate(Some(token));
    }
    match (forwarded, peer) {
        (Some(name), PeerIdentity::Node(node)) => {
            let bytes = name
                .to_bytes()
                .map_err(|_| Unauthenticated::MalformedForwarded)?;
            let name =
                std::str::from_utf8(&bytes).map_err(|_| Unauthenticated::MalformedForwarded)?;
            auth.authenticate_forwarded(name, node)
        }
        (_, PeerIdentity::Other(cn)) => auth.authenticate_certificate(&cn),
        // A node's own certificate names no principal (no `cert_cn` may
        // have the node form); the CN says which node it is.
        (_, PeerIdentity::Node(node)) => Err(Unauthenticated::UnknownCertificate(
            identity::node_common_name(node),
        )),
        (_, PeerIdentity::Unreadable(e)) => {
            Err(Unauthenticated::UnreadableCertificate(e.to_string()))
        }
        (_, PeerIdentity::None) => auth.authenticate(None),
    }
}

/// Who a call was authorized as: what forwarding it passes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The API is open.
    Open,
    /// This principal, known this way.
    Principal {
        /// Its name.
        name: String,
        /// How it was authenticated.
        via: Via,
    },
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
    /// it refuses. Returns who the caller is, for forwarding.
    pub(super) fn authorize<T>(
        &self,
        request: &Request<T>,
        call: &'static str,
        need: Need<'_>,
    ) -> Result<Caller, ApiError> {
        let (principal, via) = match identity(&self.auth, request) {
            Ok(Authenticated::Open) => return Ok(Caller::Open),
            Ok(Authenticated::As(p, via)) => (p, via),
            Err(e) => {
                self.metrics.auth_unauthenticated();
                tracing::info!(call, reason = %e, "call refused: unauthenticated");
                return Err(ApiError::Unauthenticated(e));
            }
        };
        match principal.check(call, need) {
            Ok(()) => Ok(Caller::Principal {
                name: principal.name.clone(),
                via,
            }),
            Err(denied) => {
                self.metrics.auth_denied();
                tracing::info!(call, principal = %principal.name, via = ?via, needs = %denied.needs, "call refused: permission denied");
                Err(ApiError::NotAllowed(denied))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Principal, Role};
    use tonic::metadata::MetadataValue;

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

    /// Settings with one principal: admin `ops`, token `t0k`.
    fn ops_with_token() -> AuthConfig {
        AuthConfig {
            principals: vec![Principal::with_token("ops", "t0k", Role::Admin, &[])],
            open: false,
        }
    }

    #[test]
    fn the_identity_is_the_bearer_tokens_principal() {
        let auth = ops_with_token();
        for header in ["Bearer t0k", "bearer t0k", "BEARER  t0k "] {
            match identity(&auth, &request(Some(header))) {
                Ok(Authenticated::As(p, Via::Token)) => assert_eq!(p.name, "ops"),
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

    fn cert(cn: &str) -> CertificateDer<'static> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate().expect("key");
        params.self_signed(&key).expect("cert").der().clone()
    }

    #[test]
    fn the_identity_follows_token_then_forwarded_name_then_certificate() {
        let auth = AuthConfig {
            principals: vec![
                Principal::with_token("ops", "t0k", Role::Admin, &[]),
                Principal::with_cert_cn("cs", "chunkserver", Role::Client, &["chunk/"]),
            ],
            open: false,
        };
        let node = [cert("leasehold node 2")];
        let client = [cert("chunkserver")];
        let md = |token: Option<&str>, forwarded: Option<&[u8]>| {
            let mut r = request(token);
            if let Some(name) = forwarded {
                r.metadata_mut()
                    .insert_bin(PRINCIPAL_METADATA_KEY, MetadataValue::from_bytes(name));
            }
            r.metadata().clone()
        };
        let who = |m: &MetadataMap, certs: Option<&[CertificateDer<'static>]>| {
            identity_of(&auth, m, certs).map(|a| match a {
                Authenticated::As(p, via) => (p.name.clone(), via),
                Authenticated::Open => ("<open>".to_string(), Via::Token),
            })
        };
        assert_eq!(
            who(&md(None, Some(b"cs")), Some(&node)),
            Ok(("cs".into(), Via::Forwarded(2)))
        );
        assert_eq!(
            who(&md(Some("Bearer t0k"), Some(b"cs")), Some(&node)),
            Ok(("ops".into(), Via::Token))
        );
        assert_eq!(
            who(&md(None, Some(b"nobody")), Some(&node)),
            Err(Unauthenticated::UnknownForwarded {
                node: 2,
                name: "nobody".into()
            })
        );
        assert_eq!(
            who(&md(None, Some(&[0xff, 0xfe])), Some(&node)),
            Err(Unauthenticated::MalformedForwarded)
        );
        assert_eq!(
            who(&md(None, None), Some(&node)),
            Err(Unauthenticated::UnknownCertificate(
                "leasehold node 2".into()
            ))
        );
        assert_eq!(
            who(&md(None, None), Some(&client)),
            Ok(("cs".into(), Via::Certificate))
        );
        assert_eq!(
            who(&md(Some("Bearer nope"), None), Some(&client)),
            Err(Unauthenticated::Unknown)
        );
        assert_eq!(
            who(&md(None, Some(b"ops")), Some(&client)),
            Err(Unauthenticated::ForwardedNotFromNode)
        );
        assert_eq!(
            who(&md(None, None), Some(&[cert("stranger")])),
            Err(Unauthenticated::UnknownCertificate("stranger".into()))
        );
        assert_eq!(who(&md(None, None), None), Err(Unauthenticated::Missing));
    }

    #[test]
    fn forwarded_principal_metadata_from_a_client_is_refused_even_with_a_token() {
        let auth = ops_with_token();
        let mut r = request(Some("Bearer t0k"));
        r.metadata_mut()
            .insert_bin(PRINCIPAL_METADATA_KEY, MetadataValue::from_bytes(b"ops"));
        // No client certificate at all (a plaintext or certless caller).
        assert_eq!(
            identity(&auth, &r),
            Err(Unauthenticated::ForwardedNotFromNode)
        );
        assert!(Unauthenticated::ForwardedNotFromNode
            .to_string()
            .contains(PRINCIPAL_METADATA_KEY));
        assert!(Unauthenticated::MalformedForwarded
            .to_string()
            .contains(PRINCIPAL_METADATA_KEY));
    }
}
