//! Throwaway certificates for development and tests: a cluster CA, one
//! certificate per node (usable as server and as client: peers present it
//! to each other) and client certificates, written as PEM files. Used by
//! `leasehold certs init`, `leasehold dev`, `cluster/up.sh` and the test
//! harness. Production deployments bring certificates of their own PKI.
//!
//! Files in the directory: `ca.pem`, `ca-key.pem`, `node-ID.pem`,
//! `node-ID-key.pem`, `NAME.pem`, `NAME-key.pem` (one pair per client).
//! Keys are created with mode 0600.

use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use leasehold_raft::NodeId;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use crate::config::TlsFiles;

/// Most nodes one call writes certificates for.
pub const NODES_MAX: usize = 64;
/// Most client certificates one call writes.
pub const CLIENTS_MAX: usize = 64;
/// Most host names or addresses in one node certificate.
pub const HOSTS_MAX: usize = 16;
/// Longest client name (it is also a file name).
pub const CLIENT_NAME_BYTES_MAX: usize = 64;
/// How many years the certificates are valid from the start of this year.
pub const VALID_YEARS: i32 = 10;

/// File name of the CA certificate.
pub const CA_CERT_FILE: &str = "ca.pem";
/// File name of the CA key.
pub const CA_KEY_FILE: &str = "ca-key.pem";
/// The client name `leasehold dev` and `cluster/up.sh` issue, whose files
/// (`client.pem`, `client-key.pem`) client commands pick up by default.
pub const DEFAULT_CLIENT: &str = "client";

/// What can go wrong writing certificates.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// A file exists and overwriting was not asked for; nothing was written.
    #[error("{} exists (refusing to overwrite; remove it or ask to overwrite)", .0.display())]
    Exists(PathBuf),
    /// A file or the directory could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// What to generate is not acceptable (names the node, client or limit).
    #[error("{0}")]
    Invalid(String),
    /// rcgen failed.
    #[error("generating certificates: {0}")]
    Generate(#[from] rcgen::Error),
}

/// A node certificate to issue: the node id and the hosts it is dialled at
/// (IP addresses become IP SANs, names DNS SANs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeCert {
    /// The node id (names the files: `node-ID.pem`).
    pub id: NodeId,
    /// Hosts peers and clients use to reach it, at least one.
    pub hosts: Vec<String>,
}

impl std::str::FromStr for NodeCert {
    type Err = String;

    /// `ID=HOST[,HOST…]`, e.g. `1=127.0.0.1` or `2=node2,10.0.0.2`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let usage = || format!("node {s:?} is not of the form ID=HOST[,HOST...]");
        let (id, hosts) = s.split_once('=').ok_or_else(usage)?;
        let id: NodeId = id.trim().parse().map_err(|_| usage())?;
        let hosts: Vec<String> = hosts
            .split(',')
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .collect();
        if id == 0 || hosts.is_empty() {
            return Err(usage());
        }
        Ok(NodeCert { id, hosts })
    }
}

/// Where the files of node `id` are in `dir`.
pub fn node_files(dir: &Path, id: NodeId) -> TlsFiles {
    TlsFiles {
        ca_cert: dir.join(CA_CERT_FILE),
        cert: dir.join(format!("node-{id}.pem")),
        key: dir.join(format!("node-{id}-key.pem")),
    }
}

/// Where the certificate and key of client `name` are in `dir`.
pub fn client_files(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}-key.pem")),
    )
}

/// One file to write.
struct Output {
    /// Where.
    path: PathBuf,
    /// PEM text.
    pem: String,
    /// A private key: mode 0600.
    secret: bool,
}

/// Generates a fresh CA, a certificate for each of `nodes` and for each of
/// `clients`, and writes them into `dir` (created if missing). Refuses,
/// writing nothing, when a file exists unless `overwrite`. Returns the
/// files written.
pub fn init(
    dir: &Path,
    nodes: &[NodeCert],
    clients: &[String],
    overwrite: bool,
) -> Result<Vec<PathBuf>, CertError> {
    check(nodes, clients)?;
    let mut outputs = Vec::new();
    let (ca_params, ca_key) = ca_params()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    outputs.push(Output {
        path: dir.join(CA_CERT_FILE),
        pem: ca_cert.pem(),
        secret: false,
    });
    outputs.push(Output {
        path: dir.join(CA_KEY_FILE),
        pem: ca_key.serialize_pem(),
        secret: true,
    });
    let issuer = Issuer::new(ca_params, ca_key);
    for node in nodes {
        let key = KeyPair::generate()?;
        let mut params = leaf_params(&leasehold_raft::identity::node_common_name(node.id))?;
        params.subject_alt_names = node
            .hosts
            .iter()
            .map(|h| san(h))
            .collect::<Result<_, _>>()?;
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &issuer)?;
        let files = node_files(dir, node.id);
        outputs.push(Output {
            path: files.cert,
            pem: cert.pem(),
            secret: false,
        });
        outputs.push(Output {
            path: files.key,
            pem: key.serialize_pem(),
            secret: true,
        });
    }
    for name in clients {
        let key = KeyPair::generate()?;
        let mut params = leaf_params(name)?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &issuer)?;
        let (cert_path, key_path) = client_files(dir, name);
        outputs.push(Output {
            path: cert_path,
            pem: cert.pem(),
            secret: false,
        });
        outputs.push(Output {
            path: key_path,
            pem: key.serialize_pem(),
            secret: true,
        });
    }
    std::fs::create_dir_all(dir).map_err(|source| CertError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    if !overwrite {
        if let Some(o) = outputs.iter().find(|o| o.path.exists()) {
            return Err(CertError::Exists(o.path.clone()));
        }
    }
    for o in &outputs {
        write(o, overwrite)?;
    }
    Ok(outputs.into_iter().map(|o| o.path).collect())
}

/// Checks the request against the limits and for clashing names.
fn check(nodes: &[NodeCert], clients: &[String]) -> Result<(), CertError> {
    let invalid = |m: String| Err(CertError::Invalid(m));
    if nodes.len() > NODES_MAX {
        return invalid(format!("at most {NODES_MAX} nodes (got {})", nodes.len()));
    }
    if clients.len() > CLIENTS_MAX {
        return invalid(format!(
            "at most {CLIENTS_MAX} clients (got {})",
            clients.len()
        ));
    }
    let mut ids: Vec<NodeId> = nodes.iter().map(|n| n.id).collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.len() != nodes.len() {
        return invalid("node ids must be distinct".into());
    }
    for n in nodes {
        if n.id == 0 {
            return invalid("node ids must be non-zero".into());
        }
        if n.hosts.is_empty() || n.hosts.len() > HOSTS_MAX {
            return invalid(format!(
                "node {}: between 1 and {HOSTS_MAX} hosts (got {})",
                n.id,
                n.hosts.len()
            ));
        }
    }
    for (i, name) in clients.iter().enumerate() {
        let ok_chars = name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
        if name.is_empty()
            || name.len() > CLIENT_NAME_BYTES_MAX
            || !ok_chars
            || name.starts_with('.')
        {
            return invalid(format!(
                "client name {name:?}: 1 to {CLIENT_NAME_BYTES_MAX} characters of A-Z a-z 0-9 . _ -, not starting with ."
            ));
        }
        // The character set above already keeps out the node form (it has
        // spaces); checked by name so that a wider set cannot let a client
        // certificate pass for a node's on the peer port.
        if leasehold_raft::identity::node_id_of_common_name(name).is_some() {
            return invalid(format!(
                "client name {name:?} is a node certificate's name (`{}<id>`)",
                leasehold_raft::identity::NODE_CN_PREFIX
            ));
        }
        if name == "ca" || name.starts_with("node-") || name.ends_with("-key") {
            return invalid(format!(
                "client name {name:?} clashes with the CA's or a node's files"
            ));
        }
        if clients[..i].contains(name) {
            return invalid(format!("client name {name:?} given twice"));
        }
    }
    Ok(())
}

/// The current year (UTC), from the system clock.
fn this_year() -> i32 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // Mean Gregorian year: off by at most a day around New Year, which the
    // validity window starting on January 1st absorbs.
    1970 + (secs / 31_556_952) as i32
}

/// Parameters shared by every certificate: common name and validity.
fn leaf_params(common_name: &str) -> Result<CertificateParams, CertError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Leasehold");
    let year = this_year();
    params.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
    params.not_after = rcgen::date_time_ymd(year + VALID_YEARS, 1, 1);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

/// The CA's parameters and key.
fn ca_params() -> Result<(CertificateParams, KeyPair), CertError> {
    let key = KeyPair::generate()?;
    let mut params = leaf_params("Leasehold throwaway CA")?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.use_authority_key_identifier_extension = false;
    Ok((params, key))
}

/// An IP SAN for an address, a DNS SAN for a name.
fn san(host: &str) -> Result<SanType, CertError> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<IpAddr>() {
        Ok(ip) => Ok(SanType::IpAddress(ip)),
        Err(_) => Ok(SanType::DnsName(host.try_into().map_err(|_| {
            CertError::Invalid(format!(
                "host {host:?} is neither an IP address nor a DNS name"
            ))
        })?)),
    }
}

/// Writes one file; keys get mode 0600 (also when overwriting).
fn write(o: &Output, overwrite: bool) -> Result<(), CertError> {
    let io = |source| CertError::Io {
        path: o.path.clone(),
        source,
    };
    let mode = if o.secret { 0o600 } else { 0o644 };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).mode(mode);
    if overwrite {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut file = options.open(&o.path).map_err(io)?;
    if o.secret {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(io)?;
    }
    file.write_all(o.pem.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn node_specs_parse() {
        let n: NodeCert = "2=node2, 10.0.0.2".parse().expect("parses");
        assert_eq!(n.id, 2);
        assert_eq!(n.hosts, ["node2", "10.0.0.2"]);
        for bad in ["", "1", "1=", "x=a", "0=a"] {
            assert!(bad.parse::<NodeCert>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn writes_usable_material_with_private_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let nodes = vec!["1=127.0.0.1".parse().expect("node")];
        let written = init(dir.path(), &nodes, &[DEFAULT_CLIENT.into()], false).expect("generated");
        assert_eq!(written.len(), 6);
        for path in &written {
            let mode = std::fs::metadata(path).expect("meta").permissions().mode() & 0o777;
            let is_key = path.to_string_lossy().ends_with("-key.pem");
            assert_eq!(mode, if is_key { 0o600 } else { 0o644 }, "{path:?}");
        }
        let files = node_files(dir.path(), 1);
        leasehold_raft::tls::NodeTls::load(&files.ca_cert, &files.cert, &files.key)
            .expect("node material loads");
        let e = init(dir.path(), &nodes, &[], false).expect_err("exists");
        assert!(matches!(e, CertError::Exists(_)), "{e}");
        init(dir.path(), &nodes, &[], true).expect("overwrite when asked");
    }

    #[test]
    fn node_certificates_name_their_node_and_client_certificates_do_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let nodes = vec!["7=127.0.0.1".parse().expect("node")];
        init(dir.path(), &nodes, &["cs".into()], false).expect("generated");
        let cn = |file: &str| {
            let pem = std::fs::read(dir.path().join(file)).expect("read");
            let leaf = leasehold_raft::identity::leaf_of_pem(&pem).expect("a certificate");
            leasehold_raft::identity::identify(Some(&[leaf]))
        };
        assert_eq!(
            cn("node-7.pem"),
            leasehold_raft::identity::PeerIdentity::Node(7)
        );
        assert_eq!(
            cn("cs.pem"),
            leasehold_raft::identity::PeerIdentity::Other("cs".into())
        );
    }

    #[test]
    fn refuses_clashing_names_and_limits() {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in ["ca", "node-1", "x-key", "../x", "", "leasehold node 1"] {
            let e = init(dir.path(), &[], &[name.into()], false).expect_err(name);
            assert!(matches!(e, CertError::Invalid(_)), "{name}: {e}");
        }
        let many: Vec<NodeCert> = (1..=NODES_MAX as u64 + 1)
            .map(|id| NodeCert {
                id,
                hosts: vec!["h".into()],
            })
            .collect();
        assert!(init(dir.path(), &many, &[], false).is_err());
        assert_eq!(
            std::fs::read_dir(dir.path()).expect("dir").count(),
            0,
            "nothing written on refusal"
        );
    }
}
