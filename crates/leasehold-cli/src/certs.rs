//! `leasehold certs init`: a throwaway CA with node and client
//! certificates, for development clusters (cluster/up.sh, `leasehold dev`)
//! and trials. Production brings certificates of its own PKI.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use leasehold_server::certs::NodeCert;

use crate::exit;

/// Flags of `leasehold certs`.
#[derive(Args, Debug)]
pub struct CertsArgs {
    /// What to do.
    #[command(subcommand)]
    command: CertsCmd,
}

/// The `certs` subcommands.
#[derive(Subcommand, Debug)]
enum CertsCmd {
    /// Write a new CA (ca.pem, ca-key.pem), a certificate and key per node
    /// (node-ID.pem, node-ID-key.pem) and per client (NAME.pem,
    /// NAME-key.pem) into a directory; keys get mode 0600.
    Init(InitArgs),
}

/// Flags of `leasehold certs init`.
#[derive(Args, Debug)]
#[command(after_help = "\
Example: leasehold certs init --dir .leasehold-data/tls --node 1=127.0.0.1 \
--node 2=127.0.0.1 --node 3=127.0.0.1 --client client
Then: leasehold server ... --tls-ca-cert DIR/ca.pem --tls-cert DIR/node-1.pem \
--tls-key DIR/node-1-key.pem, and clients: --ca-cert DIR/ca.pem \
[--client-cert DIR/client.pem --client-key DIR/client-key.pem].")]
struct InitArgs {
    /// Directory to write into (created if missing).
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// A node certificate: the node id and the hosts peers and clients dial
    /// it at (IP addresses become IP SANs, names DNS SANs); repeat per node.
    /// Its subject CN is `leasehold node ID`, which the peer port requires.
    #[arg(long = "node", value_name = "ID=HOST[,HOST...]", required = true)]
    nodes: Vec<NodeCert>,
    /// A client certificate with this name (written as NAME.pem and
    /// NAME-key.pem; subject CN = NAME, which a principal's cert_cn can
    /// name); repeat for several. Client commands find `client` by default.
    #[arg(long = "client", value_name = "NAME")]
    clients: Vec<String>,
    /// Replace existing files (by default an existing file is an error and
    /// nothing is written).
    #[arg(long)]
    force: bool,
}

/// Runs `leasehold certs`.
pub fn run(args: CertsArgs) -> anyhow::Result<u8> {
    match args.command {
        CertsCmd::Init(a) => {
            let written = leasehold_server::certs::init(&a.dir, &a.nodes, &a.clients, a.force)
                .context("certs init")?;
            println!(
                "wrote a throwaway CA, {} node and {} client certificate(s) to {}:",
                a.nodes.len(),
                a.clients.len(),
                a.dir.display()
            );
            for path in written {
                println!("  {}", path.display());
            }
            Ok(exit::OK)
        }
    }
}
