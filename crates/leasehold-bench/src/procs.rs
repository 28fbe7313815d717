//! The two 3-node clusters as child processes of the bench on 127.0.0.1:
//! Leasehold (`leasehold server`) and etcd. Every pid started is written to
//! `<dir>/pids` (so the bench script's exit trap stops exactly those), a
//! node killed with SIGKILL can be started again on its data, and dropping
//! a cluster kills its processes.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
pub use leasehold_tests::flood::{poll, rss_bytes};
use tokio::process::{Child, Command};

/// How long a cluster gets to elect a leader and serve.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Where a run keeps its data dirs, node logs and pid file: a directory
/// the user named (created, and kept afterwards so the logs can be read),
/// or a fresh temp dir removed when this is dropped.
pub struct WorkDir {
    /// The directory.
    path: PathBuf,
    /// Removes the temp dir on drop; `None` for a named directory.
    _temp: Option<tempfile::TempDir>,
}

impl WorkDir {
    /// `named` if given, else a fresh temp dir.
    pub fn new(named: Option<&Path>) -> anyhow::Result<Self> {
        match named {
            Some(d) => {
                std::fs::create_dir_all(d)
                    .with_context(|| format!("creating the work dir {}", d.display()))?;
                Ok(WorkDir {
                    path: d.to_path_buf(),
                    _temp: None,
                })
            }
            None => {
                let temp = tempfile::tempdir().context("creating a temp work dir")?;
                Ok(WorkDir {
                    path: temp.path().to_path_buf(),
                    _temp: Some(temp),
                })
            }
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Which system a cluster runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    /// etcd 3.4 (Debian's `etcd-server`).
    Etcd,
    /// Leasehold (`leasehold server`).
    Leasehold,
}

impl System {
    /// The name in tables.
    pub fn name(self) -> &'static str {
        match self {
            System::Etcd => "etcd",
            System::Leasehold => "Leasehold",
        }
    }
}

/// One member: how to start it and its process when running.
struct Node {
    /// Program and arguments.
    argv: Vec<String>,
    /// Client endpoint, `127.0.0.1:port`.
    endpoint: String,
    /// Where its stdout and stderr go.
    log: PathBuf,
    /// The running process.
    child: Option<Child>,
}

/// A 3-node cluster of child processes.
pub struct Cluster {
    /// The system it runs.
    pub system: System,
    /// The members, in id order (node i+1 at index i).
    nodes: Vec<Node>,
    /// The file listing every pid this cluster started.
    pids_file: PathBuf,
}

/// Ports of one cluster: node i (0-based) uses `client + i` and `peer + i`
/// (and Leasehold `metrics + i`).
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    /// First client API port.
    pub client: u16,
    /// First peer (Raft) port.
    pub peer: u16,
    /// First metrics port (Leasehold only).
    pub metrics: u16,
}

impl Cluster {
    /// A Leasehold cluster of `bin` nodes with the sample configs in
    /// `config_dir` (`nodeN.toml`), ports and data dirs overridden by flags.
    pub fn leasehold(bin: &Path, config_dir: &Path, dir: &Path, ports: Ports) -> Self {
        let peers: Vec<String> = (0..3u16)
            .map(|i| {
                format!(
                    "{}=127.0.0.1:{},127.0.0.1:{}",
                    i + 1,
                    ports.peer + i,
                    ports.client + i
                )
            })
            .collect();
        let nodes = (0..3u16)
            .map(|i| {
                let mut argv = vec![
                    bin.display().to_string(),
                    "server".into(),
                    // A loopback benchmark cluster: open API on purpose (the
                    // load generator sends no token).
                    "--auth-open".into(),
                    "--id".into(),
                    (i + 1).to_string(),
                    "--config".into(),
                    config_dir
                        .join(format!("node{}.toml", i + 1))
                        .display()
                        .to_string(),
                    "--data-dir".into(),
                    dir.join(format!("leasehold-{}", i + 1))
                        .display()
                        .to_string(),
                    "--raft-listen".into(),
                    format!("127.0.0.1:{}", ports.peer + i),
                    "--api-listen".into(),
                    format!("127.0.0.1:{}", ports.client + i),
                    "--metrics-listen".into(),
                    format!("127.0.0.1:{}", ports.metrics + i),
                    // Plaintext like etcd here: the comparison is of the
                    // lease services on loopback, not of TLS stacks.
                    "--plaintext".into(),
                ];
                for p in &peers {
                    argv.push("--peer".into());
                    argv.push(p.clone());
                }
                Node {
                    argv,
                    endpoint: format!("127.0.0.1:{}", ports.client + i),
                    log: dir.join(format!("leasehold-{}.log", i + 1)),
                    child: None,
                }
            })
            .collect();
        Cluster {
            system: System::Leasehold,
            nodes,
            pids_file: dir.join("pids"),
        }
    }

    /// An etcd cluster of `bin` members `e1`..`e3`, data under `dir`.
    pub fn etcd(bin: &Path, dir: &Path, ports: Ports) -> Self {
        let initial: Vec<String> = (0..3u16)
            .map(|i| format!("e{}=http://127.0.0.1:{}", i + 1, ports.peer + i))
            .collect();
        let initial = initial.join(",");
        let nodes = (0..3u16)
            .map(|i| {
                let client = format!("http://127.0.0.1:{}", ports.client + i);
                let peer = format!("http://127.0.0.1:{}", ports.peer + i);
                let argv = vec![
                    bin.display().to_string(),
                    "--name".into(),
                    format!("e{}", i + 1),
                    "--data-dir".into(),
                    dir.join(format!("etcd-{}", i + 1)).display().to_string(),
                    "--listen-client-urls".into(),
                    client.clone(),
                    "--advertise-client-urls".into(),
                    client,
                    "--listen-peer-urls".into(),
                    peer.clone(),
                    "--initial-advertise-peer-urls".into(),
                    peer,
                    "--initial-cluster".into(),
                    initial.clone(),
                    "--initial-cluster-state".into(),
                    "new".into(),
                    "--initial-cluster-token".into(),
                    "leasehold-bench".into(),
                    "--logger".into(),
                    "zap".into(),
                    "--log-level".into(),
                    "warn".into(),
                ];
                Node {
                    argv,
                    endpoint: format!("127.0.0.1:{}", ports.client + i),
                    log: dir.join(format!("etcd-{}.log", i + 1)),
                    child: None,
                }
            })
            .collect();
        Cluster {
            system: System::Etcd,
            nodes,
            pids_file: dir.join("pids"),
        }
    }

    /// Client endpoints, `127.0.0.1:port`, in node order.
    pub fn endpoints(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.endpoint.clone()).collect()
    }

    /// Starts every member that is not running.
    pub fn start_all(&mut self) -> anyhow::Result<()> {
        for i in 0..self.nodes.len() {
            if self.nodes[i].child.is_none() {
                self.start(i)?;
            }
        }
        Ok(())
    }

    /// Starts member `i` (0-based) on its data dir.
    pub fn start(&mut self, i: usize) -> anyhow::Result<()> {
        let node = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .with_context(|| format!("open {}", node.log.display()))?;
        let child = Command::new(&node.argv[0])
            .args(&node.argv[1..])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start {}", node.argv[0]))?;
        node.child = Some(child);
        self.record_pids()
    }

    /// Appends the running pids to the pid file (the script's trap kills
    /// the ones still alive).
    fn record_pids(&self) -> anyhow::Result<()> {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.pids_file)?;
        for pid in self.nodes.iter().filter_map(|n| n.child.as_ref()?.id()) {
            writeln!(f, "{pid}")?;
        }
        Ok(())
    }

    /// Process id of member `i`, if running.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.nodes.get(i)?.child.as_ref()?.id()
    }

    /// Fails if a started member has exited (names its log).
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        let system = self.system.name();
        for n in &mut self.nodes {
            if let Some(c) = n.child.as_mut() {
                if let Some(status) = c.try_wait()? {
                    anyhow::bail!(
                        "{system} node {} exited ({status}); see {}",
                        n.endpoint,
                        n.log.display()
                    );
                }
            }
        }
        Ok(())
    }

    /// SIGKILLs member `i` and reaps it.
    pub async fn kill(&mut self, i: usize) -> anyhow::Result<()> {
        if let Some(mut c) = self.nodes[i].child.take() {
            c.start_kill()?;
            c.wait().await?;
        }
        Ok(())
    }

    /// Kills every member and reaps them.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        for i in 0..self.nodes.len() {
            self.kill(i).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_of_this_process_is_read() -> anyhow::Result<()> {
        let rss = rss_bytes(std::process::id())?;
        assert!(rss > 1024 * 1024, "rss {rss}");
        Ok(())
    }

    #[tokio::test]
    async fn a_killed_member_is_reaped_and_its_pid_recorded() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let ports = Ports {
            client: 1,
            peer: 1,
            metrics: 1,
        };
        // A cluster of `sleep` stand-ins: the process handling is what's
        // under test, not a server.
        let mut c = Cluster::etcd(Path::new("sleep"), dir.path(), ports);
        for n in &mut c.nodes {
            n.argv = vec!["sleep".into(), "30".into()];
        }
        c.start_all()?;
        let pids: Vec<u32> = (0..3).filter_map(|i| c.pid(i)).collect();
        assert_eq!(pids.len(), 3);
        let recorded = std::fs::read_to_string(dir.path().join("pids"))?;
        for p in &pids {
            assert!(recorded.lines().any(|l| l == p.to_string()));
        }
        c.kill(1).await?;
        assert_eq!(c.pid(1), None);
        assert!(!Path::new(&format!("/proc/{}", pids[1])).exists());
        c.check_alive()?;
        c.stop().await?;
        assert!(pids
            .iter()
            .all(|p| !Path::new(&format!("/proc/{p}")).exists()));
        Ok(())
    }
}
