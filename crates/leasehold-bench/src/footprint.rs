//! `leasehold-bench footprint`: the bytes the domain core keeps per lease,
//! without a cluster. Applies `--leases` one-call acquires (one private
//! session each, as the `scale` run makes them) to a [`LeaseState`] and
//! feeds the sessions to a leading [`LeaderState`], reading what jemalloc
//! has handed out (its size classes, as the server runs with).
//! Then every session expires, to show the memory comes back.
//!
//! It splits the `scale` run's RSS per lease into the replicated state
//! (every node), the leader's deadline table (the leader only) and the
//! rest (sled, Raft, buffers), and it is repeatable to the byte.

use std::time::Instant;

use leasehold_core::{
    Acquire, Command, LeaderState, LeaseConfig, LeaseState, Mode, SessionChange, SessionSecret,
    SessionTarget,
};

/// Bytes the program has allocated now, by jemalloc's own count (size
/// classes included; the binary runs on jemalloc, as the server does).
fn allocated() -> anyhow::Result<i64> {
    tikv_jemalloc_ctl::epoch::advance().map_err(|e| anyhow::anyhow!("jemalloc epoch: {e}"))?;
    let bytes = tikv_jemalloc_ctl::stats::allocated::read()
        .map_err(|e| anyhow::anyhow!("jemalloc stats: {e}"))?;
    Ok(bytes as i64)
}

/// Flags of `leasehold-bench footprint`.
#[derive(clap::Args, Debug)]
pub struct FootprintArgs {
    /// Leases held at once, each in its own session.
    #[arg(long, default_value_t = 1_000_000)]
    pub leases: u64,
}

/// TTL of the sessions (the leader's table does not depend on it).
const TTL_MS: u64 = 3_600_000;

/// Applies the acquires, then the expiry, and prints the bytes at each step.
pub fn run(args: FootprintArgs) -> anyhow::Result<()> {
    let config = LeaseConfig {
        vote_window_ms: 1_000,
        ttl_ms_max: TTL_MS,
        ..LeaseConfig::default()
    };
    let mut state = LeaseState::new(config);
    let mut leader = LeaderState::new(1_000, 0, &config);
    leader
        .takeover(1, 0, 0, std::iter::empty())
        .ok_or_else(|| anyhow::anyhow!("the leader state refused to take over"))?;
    let n = args.leases.max(1);
    let per = |bytes: i64| bytes as f64 / n as f64;

    let start = allocated()?;
    let started = Instant::now();
    let mut index = 1u64;
    for i in 0..n {
        let command = Command::Acquire(Acquire {
            session: SessionTarget::Private {
                client_name: "scale".into(),
                ttl_ms: TTL_MS,
                secret: SessionSecret([i as u8; 16]),
                request_id: 0,
            },
            resource: format!("scale/{i:08}"),
            mode: Mode::Exclusive,
            wait: false,
            metadata: Vec::new(),
        });
        state.apply(index, &command);
        index += 1;
    }
    let built = started.elapsed();
    let state_bytes = allocated()? - start;
    anyhow::ensure!(
        state.session_count() as u64 == n,
        "expected {n} sessions, the state has {}",
        state.session_count()
    );
    let before = allocated()?;
    for s in state.sessions() {
        leader.apply(
            SessionChange::Opened {
                session: s.id,
                ttl_ms: s.ttl_ms,
                secret: s.secret,
            },
            0,
        );
    }
    let leader_bytes = allocated()? - before;
    println!(
        "{n} leases applied in {:.1} s: {:.0} bytes per lease in the replicated state (every node), {:.0} in the leader's deadline table",
        built.as_secs_f64(),
        per(state_bytes),
        per(leader_bytes)
    );

    let encode_started = Instant::now();
    let snapshot = state.encode();
    println!(
        "snapshot: {:.1} MiB ({:.0} bytes per lease), encoded in {:.2} s",
        snapshot.len() as f64 / 1048576.0,
        snapshot.len() as f64 / n as f64,
        encode_started.elapsed().as_secs_f64()
    );
    drop(snapshot);

    let sessions: Vec<u64> = state.sessions().map(|s| s.id).collect();
    for chunk in sessions.chunks(1_000) {
        let applied = state.apply(
            index,
            &Command::ExpireSessions {
                sessions: chunk.to_vec(),
            },
        );
        index += 1;
        for change in applied.sessions {
            leader.apply(change, 0);
        }
    }
    drop(sessions);
    anyhow::ensure!(state.session_count() == 0, "sessions left after expiry");
    println!(
        "after every session expired: {:.1} bytes per lease still allocated",
        per(allocated()? - start)
    );
    Ok(())
}
