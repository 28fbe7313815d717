//! `leasehold server` on a faulty disk (docs/adr/0007-disk-faults-fail-stop.md):
//! it refuses a corrupt or read-only data directory with one line and exit
//! code 1, and exits 1 with one line when its disk fills while it runs.
//! Mounting needs root: those tests print a SKIPPED line otherwise (CI runs
//! as root).

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use anyhow::Context;
use leasehold_tests::disk::{self, Tmpfs};
use leasehold_tests::grpc;
use leasehold_tests::WAIT;
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// The binary under test.
const BIN: &str = env!("CARGO_BIN_EXE_leasehold");
/// Size of the tmpfs a test mounts.
const TMPFS_BYTES: u64 = 16 * 1024 * 1024;
/// How long the full-disk test writes before giving up.
const FILL_MAX: Duration = Duration::from_secs(60);

/// A port nobody listens on right now.
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// `leasehold server` as a one-node cluster on `data_dir`; returns the
/// command and its client API address.
fn server(data_dir: &Path) -> anyhow::Result<(Command, String)> {
    let (raft, api) = (free_port()?, free_port()?);
    let raft_addr = format!("127.0.0.1:{raft}");
    let api_addr = format!("127.0.0.1:{api}");
    let peer = format!("1={raft_addr},{api_addr}");
    let mut c = Command::new(BIN);
    c.args(["server", "--id", "1", "--peer", &peer])
        .args(["--raft-listen", &raft_addr, "--api-listen", &api_addr])
        .args(["--plaintext", "--auth-open"])
        .arg("--data-dir")
        .arg(data_dir)
        .env_clear()
        .kill_on_drop(true);
    Ok((c, api_addr))
}

async fn output(mut c: Command) -> anyhow::Result<Output> {
    Ok(tokio::time::timeout(WAIT, c.output()).await??)
}

/// The last line of stderr: the one the CLI prints for its error.
fn last_line(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn a_corrupt_data_dir_is_refused_with_one_line_and_exit_1() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // A durability guard with no valid record: damaged.
    std::fs::write(dir.path().join("leasehold.guard"), [0x5au8; 128])?;
    let (c, _) = server(dir.path())?;
    let o = output(c).await?;
    let line = last_line(&o);
    assert_eq!(o.status.code(), Some(1), "{line}");
    let want = format!(
        "leasehold: storage: the store in {} is corrupt",
        dir.path().display()
    );
    assert!(line.starts_with(&want), "{line}");
    Ok(())
}

#[tokio::test]
async fn a_read_only_data_dir_is_refused_with_one_line_and_exit_1() -> anyhow::Result<()> {
    if disk::skip_unless_root("a_read_only_data_dir_is_refused_with_one_line_and_exit_1") {
        return Ok(());
    }
    let mount = tempfile::tempdir()?;
    let tmpfs = Tmpfs::mount(mount.path(), TMPFS_BYTES)?;
    tmpfs.remount_read_only()?;
    let (c, _) = server(tmpfs.path())?;
    let o = output(c).await?;
    let line = last_line(&o);
    assert_eq!(o.status.code(), Some(1), "{line}");
    assert!(
        line.starts_with("leasehold: storage: cannot open the sled database at ")
            && line.contains(&tmpfs.path().display().to_string())
            && line.contains("Read-only file system"),
        "{line}"
    );
    Ok(())
}

/// Sends acquires of fresh resources to `api_addr` until `child` exits.
async fn write_until_exit(child: &mut Child, api_addr: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + FILL_MAX;
    let session = loop {
        if let Ok(s) = grpc::open(api_addr, "disk-full", 30_000).await {
            break s;
        }
        anyhow::ensure!(Instant::now() < deadline, "the server never served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut api = grpc::client(api_addr).await?;
    for i in 0u64.. {
        if child.try_wait()?.is_some() {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the server still runs after {i} acquires on a full disk"
        );
        let resource = format!("fill/{i:06}");
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            api.acquire(grpc::acquire_req(session, &resource, false, 0)),
        )
        .await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_whose_disk_fills_exits_1_with_one_line() -> anyhow::Result<()> {
    if disk::skip_unless_root("a_server_whose_disk_fills_exits_1_with_one_line") {
        return Ok(());
    }
    let mount = tempfile::tempdir()?;
    let tmpfs = Tmpfs::mount(mount.path(), TMPFS_BYTES)?;
    let data_dir = tmpfs.path().join("node-1");
    let (mut c, api_addr) = server(&data_dir)?;
    let mut child = c
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting the server")?;
    // Let it create its store, then take the rest of the space.
    let started = Instant::now() + WAIT;
    while !data_dir.join("leasehold.guard").exists() {
        anyhow::ensure!(Instant::now() < started, "the server created no store");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tmpfs.fill()?;
    write_until_exit(&mut child, &api_addr).await?;
    let o = tokio::time::timeout(WAIT, child.wait_with_output()).await??;
    let line = last_line(&o);
    assert_eq!(o.status.code(), Some(1), "{line}");
    let want = format!(
        "leasehold: storage failed, node stopped (fail-stop): storage failed in {}",
        data_dir.display()
    );
    assert!(
        line.starts_with(&want) && line.contains("No space left on device"),
        "{line}"
    );
    Ok(())
}
