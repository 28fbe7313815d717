//! The elected master's loop: refresh the primaries from Leasehold, assign
//! a primary to every chunk without one (only from up-to-date replicas),
//! and recall primaries whose up-to-date replicas fell below the
//! replication factor (the next assignment installs the chunk on new
//! replicas). Also chunk creation.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use leasehold_proto::gfs::v1 as pb;

use super::{note_assignment, MasterInner, State};
use crate::error::GfsError;
use crate::names::chunk_lease;
use crate::store::Member;

/// What to do with one chunk without a primary.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// The chunk.
    chunk: String,
    /// The new primary.
    primary: Member,
    /// The secondaries to install.
    secondaries: Vec<Member>,
}

impl MasterInner {
    /// One pass of the loop.
    pub(crate) async fn step(self: &Arc<Self>) {
        let holders = match self.read_holders().await {
            Ok(h) => h,
            Err(e) => {
                tracing::debug!(error = %e, "listing chunk leases failed");
                return;
            }
        };
        let (plans, recalls) = {
            let mut st = self.state();
            for (chunk, h) in &holders {
                let v = st.max_version.entry(chunk.clone()).or_default();
                *v = (*v).max(h.version);
                if !st.inflight.contains(chunk) {
                    // A primary this master did not assign (an earlier master's).
                    st.last_primary
                        .entry(chunk.clone())
                        .or_insert_with(|| h.member.server_id.clone());
                }
            }
            st.holders = holders;
            let live = Self::live_servers(&st, self.config.report_timeout);
            let chunks: Vec<String> = st.max_version.keys().cloned().collect();
            let mut plans = Vec::new();
            let mut recalls = Vec::new();
            for chunk in chunks {
                if st.inflight.contains(&chunk) {
                    continue;
                }
                if let Some(h) = st.holders.get(&chunk).cloned() {
                    if self.needs_replicas(&st, &live, &chunk, &h.member.server_id, h.version) {
                        st.last_rereplicate.insert(chunk.clone(), Instant::now());
                        st.prefer.insert(chunk.clone(), h.member.server_id.clone());
                        recalls.push(chunk);
                    }
                } else if let Some(plan) = plan(&st, &live, &chunk) {
                    st.inflight.insert(chunk.clone());
                    plans.push(plan);
                }
            }
            (plans, recalls)
        };
        for chunk in recalls {
            if !self.is_master() {
                return;
            }
            match self
                .leasehold
                .recall(&chunk_lease(&chunk), "re-replicate")
                .await
            {
                Ok(_) => {
                    self.counters.recalls.fetch_add(1, Ordering::Relaxed);
                    self.counters
                        .re_replications
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::info!(chunk, "recalled the primary to re-replicate");
                }
                Err(e) => tracing::debug!(chunk, error = %e, "re-replication recall failed"),
            }
        }
        for plan in plans {
            let inner = Arc::clone(self);
            tokio::spawn(async move {
                let chunk = plan.chunk.clone();
                if let Err(e) = inner.assign(plan, false).await {
                    tracing::debug!(chunk, error = %e, "assignment failed");
                }
                inner.state().inflight.remove(&chunk);
            });
        }
    }

    /// Whether the primary's term has fewer present replicas (reported
    /// within `rereplicate_after`) than the replication factor while other
    /// live chunkservers could take one.
    fn needs_replicas(
        &self,
        st: &State,
        live: &BTreeSet<String>,
        chunk: &str,
        primary: &str,
        version: u64,
    ) -> bool {
        let Some(report) = st.servers.get(primary).and_then(|s| s.chunks.get(chunk)) else {
            return false;
        };
        if report.version != version || !report.primary {
            return false;
        }
        let set: BTreeSet<&str> = report
            .replicas
            .iter()
            .map(|r| r.server_id.as_str())
            .collect();
        // Members still reporting recently enough count as present.
        let have = set
            .iter()
            .filter(|s| {
                st.servers
                    .get(**s)
                    .is_some_and(|v| v.last_report.elapsed() <= self.config.rereplicate_after)
            })
            .count();
        let want = Self::replication(st, chunk) as usize;
        let spare = live.iter().any(|s| !set.contains(s.as_str()));
        let recent = st
            .last_rereplicate
            .get(chunk)
            .is_some_and(|t| t.elapsed() < self.config.rereplicate_every);
        have < want && spare && !recent
    }

    /// Asks the plan's primary to become primary; records the outcome.
    pub(crate) async fn assign(&self, plan: Plan, create: bool) -> Result<pb::Location, GfsError> {
        if !self.is_master() {
            return Err(GfsError::Unavailable("no longer the elected master".into()));
        }
        let mut stub = self.pool.chunkserver(&plan.primary.address)?;
        let reply = match stub
            .become_primary(pb::BecomePrimaryRequest {
                chunk: plan.chunk.clone(),
                secondaries: plan
                    .secondaries
                    .iter()
                    .map(crate::chunkserver::member_to_pb)
                    .collect(),
                create,
                master_id: self.config.id.clone(),
            })
            .await
        {
            Ok(r) => r.into_inner(),
            Err(status) => {
                // Not chosen again for a while (no session, paused, …).
                self.state().avoid_until.insert(
                    plan.primary.server_id.clone(),
                    Instant::now() + self.config.report_timeout,
                );
                return Err(GfsError::from(status));
            }
        };
        note_assignment(self, &plan.chunk, &plan.primary.server_id, reply.version);
        self.state().prefer.remove(&plan.chunk);
        Ok(pb::Location {
            chunk: plan.chunk,
            version: reply.version,
            primary: plan.primary.address,
            replicas: reply.replicas,
            cache_ms: 0,
        })
    }

    /// Creates a chunk on the least loaded live chunkservers. The work runs
    /// in its own task: a caller that gives up (its RPC dropped) must not
    /// leave the chunk marked in flight forever.
    pub(crate) async fn create(
        self: &Arc<Self>,
        chunk: &str,
        replication: u32,
    ) -> Result<pb::Location, GfsError> {
        let inner = Arc::clone(self);
        let chunk = chunk.to_string();
        tokio::spawn(async move { inner.create_now(&chunk, replication).await })
            .await
            .map_err(|e| GfsError::Unavailable(format!("create task: {e}")))?
    }

    /// The work of [`MasterInner::create`].
    async fn create_now(&self, chunk: &str, replication: u32) -> Result<pb::Location, GfsError> {
        let known = {
            let st = self.state();
            st.max_version.contains_key(chunk) || st.inflight.contains(chunk)
        };
        if known {
            return self.locate(chunk).await;
        }
        let plan = {
            let mut st = self.state();
            let live = Self::live_servers(&st, self.config.report_timeout);
            // Least loaded first: fewest primaries, then fewest chunks.
            let mut by_load: Vec<(usize, usize, String)> = live
                .iter()
                .map(|s| {
                    let primaries = st
                        .holders
                        .values()
                        .filter(|h| &h.member.server_id == s)
                        .count();
                    let chunks = st.servers.get(s).map_or(0, |v| v.chunks.len());
                    (primaries, chunks, s.clone())
                })
                .collect();
            by_load.sort();
            let picked: Vec<Member> = by_load
                .into_iter()
                .take(replication as usize)
                .filter_map(|(_, _, s)| member(&st, &s))
                .collect();
            let Some((primary, secondaries)) = picked.split_first() else {
                return Err(GfsError::Unavailable("no live chunkserver".into()));
            };
            st.inflight.insert(chunk.to_string());
            st.replication.insert(chunk.to_string(), replication);
            Plan {
                chunk: chunk.to_string(),
                primary: primary.clone(),
                secondaries: secondaries.to_vec(),
            }
        };
        let result = self.assign(plan, true).await;
        let mut st = self.state();
        st.inflight.remove(chunk);
        if result.is_err() && !st.max_version.contains_key(chunk) {
            st.replication.remove(chunk);
        }
        result
    }
}

/// A chunkserver as a replica-set member, from its last report.
fn member(st: &State, server_id: &str) -> Option<Member> {
    st.servers.get(server_id).map(|v| Member {
        server_id: server_id.to_string(),
        address: v.address.clone(),
    })
}

/// Picks a primary and secondaries for a chunk without a primary: the
/// primary and the first secondaries among live replicas at the newest
/// version the master knows (stale replicas are excluded); then, up to the
/// replication factor, stale live replicas and other live chunkservers
/// (the new primary installs its content on them). None while no live
/// replica is up to date.
fn plan(st: &State, live: &BTreeSet<String>, chunk: &str) -> Option<Plan> {
    let known = st.max_version.get(chunk).copied().unwrap_or(0);
    let mut up_to_date = Vec::new();
    let mut stale = Vec::new();
    for s in live {
        let Some(c) = st.servers.get(s).and_then(|v| v.chunks.get(chunk)) else {
            continue;
        };
        if c.version >= known {
            up_to_date.push(s.clone());
        } else {
            stale.push(s.clone());
        }
    }
    if up_to_date.is_empty() {
        tracing::debug!(chunk, known, "no live replica at the newest version");
        return None;
    }
    let primaries_of = |s: &String| {
        st.holders
            .values()
            .filter(|h| &h.member.server_id == s)
            .count()
    };
    let preferred = st
        .prefer
        .get(chunk)
        .filter(|p| up_to_date.contains(p))
        .cloned();
    let primary =
        preferred.or_else(|| up_to_date.iter().min_by_key(|s| primaries_of(s)).cloned())?;
    let want = MasterInner::replication(st, chunk) as usize;
    let mut others: Vec<String> = up_to_date.into_iter().filter(|s| s != &primary).collect();
    others.extend(stale);
    let mut rest: Vec<(usize, String)> = live
        .iter()
        .filter(|s| **s != primary && !others.contains(s))
        .map(|s| (st.servers.get(s).map_or(0, |v| v.chunks.len()), s.clone()))
        .collect();
    rest.sort();
    others.extend(rest.into_iter().map(|(_, s)| s));
    others.truncate(want.saturating_sub(1));
    Some(Plan {
        chunk: chunk.to_string(),
        primary: member(st, &primary)?,
        secondaries: others.iter().filter_map(|s| member(st, s)).collect(),
    })
}
