//! Who is at the other end of a TLS connection: the subject common name
//! (CN) of the certificate a peer presented, and whether that certificate
//! is a **node certificate** of the cluster.
//!
//! A node certificate is one signed by the cluster CA (rustls verified it
//! during the handshake) whose subject CN is `leasehold node <id>`
//! ([`node_common_name`]), with `<id>` a decimal node id. `leasehold certs
//! init` issues exactly that; an operator's own PKI must do the same for
//! node certificates and must never issue that form to a client. Only a
//! node certificate may talk to the Raft peer port, and only a connection
//! made with one may forward a caller's identity on the client API. See
//! docs/adr/0008-transport-security.md.

use std::sync::Arc;

use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::transport::CertificateDer;

use crate::types::NodeId;

/// What every node certificate's subject CN starts with; the node id
/// follows in decimal.
pub const NODE_CN_PREFIX: &str = "leasehold node ";

/// Why the common name of a certificate could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertNameError {
    /// The DER does not parse as an X.509 certificate.
    #[error("the certificate does not parse: {0}")]
    Unparsable(String),
    /// The subject has no common name.
    #[error("the certificate's subject has no common name (CN)")]
    NoCommonName,
    /// The subject has more than one common name: which one names the
    /// holder would be a guess.
    #[error("the certificate's subject has more than one common name (CN)")]
    SeveralCommonNames,
    /// The common name is not a string type this reads (UTF8String,
    /// PrintableString, IA5String, NumericString).
    #[error("the certificate's common name (CN) is not a readable string")]
    NotAString,
}

/// The subject CN of a node certificate for node `id`.
pub fn node_common_name(id: NodeId) -> String {
    format!("{NODE_CN_PREFIX}{id}")
}

/// The node id a subject CN names, when it is of the node form
/// `leasehold node <id>` (decimal digits only, no sign, no padding
/// spaces, non-zero); `None` for any other name.
pub fn node_id_of_common_name(cn: &str) -> Option<NodeId> {
    let digits = cn.strip_prefix(NODE_CN_PREFIX)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<NodeId>().ok().filter(|id| *id != 0)
}

/// The subject common name of a DER certificate: exactly one CN, as a
/// string.
pub fn subject_common_name(der: &[u8]) -> Result<String, CertNameError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| CertNameError::Unparsable(e.to_string()))?;
    let mut names = cert.subject().iter_common_name();
    let first = names.next().ok_or(CertNameError::NoCommonName)?;
    if names.next().is_some() {
        return Err(CertNameError::SeveralCommonNames);
    }
    first
        .as_str()
        .map(str::to_string)
        .map_err(|_| CertNameError::NotAString)
}

/// The first certificate of a PEM file (the leaf of a chain), as DER.
pub fn leaf_of_pem(pem: &[u8]) -> Result<CertificateDer<'static>, CertNameError> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem)
        .map_err(|e| CertNameError::Unparsable(e.to_string()))?;
    if block.label != "CERTIFICATE" {
        return Err(CertNameError::Unparsable(format!(
            "the first PEM block is a {:?}, not a CERTIFICATE",
            block.label
        )));
    }
    Ok(CertificateDer::from(block.contents))
}

/// The certificates a TLS client presented (leaf first), as the server
/// sees them on a connection accepted by tonic's `TcpIncoming` (the peer
/// port) or by a listener whose connect info is `C` (the client API's own
/// connection tracking). `None`: plaintext, or TLS without a client
/// certificate. Certificates here were verified against the cluster CA
/// during the handshake.
pub fn peer_certs<T, C>(request: &tonic::Request<T>) -> Option<Arc<Vec<CertificateDer<'static>>>>
where
    C: Clone + Send + Sync + 'static,
{
    let extensions = request.extensions();
    extensions
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(TlsConnectInfo::peer_certs)
        .or_else(|| {
            extensions
                .get::<TlsConnectInfo<C>>()
                .and_then(TlsConnectInfo::peer_certs)
        })
        .filter(|certs| !certs.is_empty())
}

/// What the client certificate of a connection says about the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerIdentity {
    /// No client certificate (plaintext, or TLS without one).
    None,
    /// A node certificate of the cluster: node `id`.
    Node(NodeId),
    /// Another certificate of the cluster CA, with this subject CN.
    Other(String),
    /// A certificate whose CN could not be read.
    Unreadable(CertNameError),
}

/// What the leaf of `certs` says about the caller.
pub fn identify(certs: Option<&[CertificateDer<'static>]>) -> PeerIdentity {
    let Some(leaf) = certs.and_then(|c| c.first()) else {
        return PeerIdentity::None;
    };
    match subject_common_name(leaf.as_ref()) {
        Ok(cn) => match node_id_of_common_name(&cn) {
            Some(id) => PeerIdentity::Node(id),
            None => PeerIdentity::Other(cn),
        },
        Err(e) => PeerIdentity::Unreadable(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // rcgen keeps one value per attribute type, so a subject with two CNs
    // (refused as `SeveralCommonNames`) cannot be made here.
    fn cert_with_cns(cns: &[&str]) -> CertificateDer<'static> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        for cn in cns {
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, *cn);
        }
        let key = rcgen::KeyPair::generate().expect("key");
        params.self_signed(&key).expect("cert").der().clone()
    }

    #[test]
    fn only_the_exact_node_form_names_a_node() {
        assert_eq!(node_common_name(7), "leasehold node 7");
        assert_eq!(node_id_of_common_name("leasehold node 7"), Some(7));
        assert_eq!(
            node_id_of_common_name("leasehold node 18446744073709551615"),
            Some(u64::MAX)
        );
        for other in [
            "leasehold node ",
            "leasehold node 0",
            "leasehold node +7",
            "leasehold node 7 ",
            "leasehold node 7x",
            "leasehold node -1",
            "Leasehold node 7",
            "leasehold  node 7",
            "leasehold node 18446744073709551616",
            "client",
        ] {
            assert_eq!(node_id_of_common_name(other), None, "{other:?}");
        }
    }

    #[test]
    fn the_leaf_of_a_pem_file_is_its_first_certificate() {
        let node = cert_with_cns(&["leasehold node 4"]);
        let pem = format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            base64(node.as_ref())
        );
        let leaf = leaf_of_pem(pem.as_bytes()).expect("parses");
        assert_eq!(identify(Some(&[leaf])), PeerIdentity::Node(4));
        assert!(leaf_of_pem(b"not PEM").is_err());
        let key = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert!(leaf_of_pem(key.as_bytes()).is_err());
    }

    fn base64(bytes: &[u8]) -> String {
        const ABC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b))
                << (8 * (3 - chunk.len()));
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(ABC[((n >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    #[test]
    fn the_leaf_certificate_names_the_caller() {
        let node = cert_with_cns(&["leasehold node 3"]);
        let client = cert_with_cns(&["chunkserver \"a\""]);
        let none = cert_with_cns(&[]);
        assert_eq!(identify(None), PeerIdentity::None);
        assert_eq!(identify(Some(&[])), PeerIdentity::None);
        assert_eq!(
            identify(Some(std::slice::from_ref(&node))),
            PeerIdentity::Node(3)
        );
        assert_eq!(
            identify(Some(&[client.clone(), node])),
            PeerIdentity::Other("chunkserver \"a\"".into())
        );
        assert_eq!(
            identify(Some(&[none])),
            PeerIdentity::Unreadable(CertNameError::NoCommonName)
        );
        assert!(matches!(
            identify(Some(&[CertificateDer::from(vec![0x30, 0x03, 1, 2, 3])])),
            PeerIdentity::Unreadable(CertNameError::Unparsable(_))
        ));
    }
}
