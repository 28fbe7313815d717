//! TLS of a node's gRPC traffic (rustls through tonic, ring provider).
//!
//! A node holds one [`NodeTls`]: the cluster CA's certificate and the
//! node's own certificate and key. With it:
//! - the Raft peer server demands a client certificate signed by the CA
//!   (mutual TLS: a peer without one cannot send Raft messages), and the
//!   peer service then refuses every RPC whose certificate is not a node
//!   certificate (subject CN `leasehold node <id>`, see
//!   [`crate::identity`]): the CA also signs clients' certificates;
//! - the client API server offers TLS and verifies a client certificate
//!   against the CA when one is presented ([`ClientAuth::Optional`]); its
//!   subject CN may name a principal (leasehold-server's auth);
//! - every outgoing channel (peer RPCs, forwarding to the leader, a joining
//!   node's admission probes) verifies the server against the CA and the
//!   host it dials (IP or DNS SAN), and presents the node's certificate.
//!
//! Without it the node runs plaintext, which the server only does when
//! asked explicitly (see leasehold-server's `NodeConfig::plaintext`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};

use crate::identity::PeerIdentity;

/// Bound on a TLS handshake a server waits for: a client that connects and
/// sends nothing must not hold a connection slot forever.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest PEM file read (certificate, chain or key), in bytes: the files
/// are a few KiB; anything this large is not what was meant.
pub const PEM_BYTES_MAX: u64 = 1024 * 1024;

/// What can go wrong loading TLS material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read.
    #[error("cannot read {what} {}: {source}", path.display())]
    Read {
        /// Which file it is (`tls.ca_cert`, `tls.cert`, `tls.key`).
        what: &'static str,
        /// The path given.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A PEM file is larger than [`PEM_BYTES_MAX`].
    #[error("{what} {} is larger than {PEM_BYTES_MAX} bytes", path.display())]
    TooLarge {
        /// Which file it is.
        what: &'static str,
        /// The path given.
        path: PathBuf,
    },
    /// The certificates or key do not make a usable TLS configuration.
    #[error("invalid TLS material ({what}): {message}")]
    Invalid {
        /// Which part was refused.
        what: &'static str,
        /// rustls' or tonic's reason.
        message: String,
    },
}

/// Whether a TLS server asks its clients for a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// A certificate signed by the CA is required (the Raft peer service).
    Required,
    /// A certificate is verified against the CA when presented, and the
    /// connection is accepted without one (the client API).
    Optional,
}

/// Reads one PEM file, bounded by [`PEM_BYTES_MAX`].
pub fn read_pem(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    let read_error = |source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    };
    let len = std::fs::metadata(path).map_err(read_error)?.len();
    if len > PEM_BYTES_MAX {
        return Err(TlsError::TooLarge {
            what,
            path: path.to_path_buf(),
        });
    }
    std::fs::read(path).map_err(read_error)
}

/// A node's TLS material: the cluster CA and the node's certificate and key,
/// checked to form valid server and client configurations.
#[derive(Clone, PartialEq, Eq)]
pub struct NodeTls {
    /// PEM of the cluster CA: the trust anchor for peers' and clients'
    /// certificates, and for servers this node dials.
    ca_cert_pem: Vec<u8>,
    /// PEM of the node's certificate (chain): shown as server and as client.
    cert_pem: Vec<u8>,
    /// PEM of the node's private key.
    key_pem: Vec<u8>,
}

/// Never prints the key.
impl fmt::Debug for NodeTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeTls")
            .field("ca_cert_pem_bytes", &self.ca_cert_pem.len())
            .field("cert_pem_bytes", &self.cert_pem.len())
            .finish_non_exhaustive()
    }
}

impl NodeTls {
    /// Material from PEM bytes; fails unless it makes valid server and
    /// client configurations (parsable certificates, a key matching).
    pub fn from_pem(
        ca_cert_pem: Vec<u8>,
        cert_pem: Vec<u8>,
        key_pem: Vec<u8>,
    ) -> Result<Self, TlsError> {
        let tls = NodeTls {
            ca_cert_pem,
            cert_pem,
            key_pem,
        };
        tonic::transport::Server::builder()
            .tls_config(tls.server_config(ClientAuth::Required))
            .map_err(|e| TlsError::Invalid {
                what: "server: certificate, key or CA",
                message: error_chain(&e),
            })?;
        Endpoint::from_static("https://localhost")
            .tls_config(tls.client_config())
            .map_err(|e| TlsError::Invalid {
                what: "client: certificate, key or CA",
                message: error_chain(&e),
            })?;
        Ok(tls)
    }

    /// Reads the CA certificate, the node's certificate and its key from
    /// PEM files.
    pub fn load(ca_cert: &Path, cert: &Path, key: &Path) -> Result<Self, TlsError> {
        NodeTls::from_pem(
            read_pem("tls.ca_cert", ca_cert)?,
            read_pem("tls.cert", cert)?,
            read_pem("tls.key", key)?,
        )
    }

    /// The CA certificate's PEM.
    pub fn ca_cert_pem(&self) -> &[u8] {
        &self.ca_cert_pem
    }

    /// What this node's own certificate says it is: a node must hold a
    /// node certificate (subject CN `leasehold node <id>`), or its peers
    /// refuse its Raft messages and its forwarded calls.
    pub fn identity(&self) -> PeerIdentity {
        match crate::identity::leaf_of_pem(&self.cert_pem) {
            Ok(leaf) => crate::identity::identify(Some(&[leaf])),
            Err(e) => PeerIdentity::Unreadable(e),
        }
    }

    /// The server side: this node's certificate, client certificates
    /// verified against the CA as `auth` says, handshakes bounded by
    /// [`HANDSHAKE_TIMEOUT`].
    pub fn server_config(&self, auth: ClientAuth) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .client_ca_root(Certificate::from_pem(&self.ca_cert_pem))
            .client_auth_optional(auth == ClientAuth::Optional)
            .timeout(HANDSHAKE_TIMEOUT)
    }

    /// The client side: servers verified against the CA and the dialled
    /// host, this node's certificate presented.
    pub fn client_config(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_cert_pem))
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .timeout(HANDSHAKE_TIMEOUT)
    }
}

/// An endpoint for a node address (`host:port`, or a URI whose scheme is
/// replaced): `https://` with `tls`, `http://` without.
pub fn endpoint(addr: &str, tls: Option<&NodeTls>) -> Result<Endpoint, String> {
    let authority = addr.split_once("://").map_or(addr, |(_, rest)| rest);
    let scheme = if tls.is_some() { "https" } else { "http" };
    let endpoint =
        Endpoint::from_shared(format!("{scheme}://{authority}")).map_err(|e| error_chain(&e))?;
    match tls {
        Some(tls) => endpoint
            .tls_config(tls.client_config())
            .map_err(|e| error_chain(&e)),
        None => Ok(endpoint),
    }
}

pub use leasehold_proto::error_chain;
