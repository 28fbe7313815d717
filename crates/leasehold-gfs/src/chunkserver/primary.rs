//! The primary role: becoming primary (acquire `chunk/C` in this
//! chunkserver's session, stamp the new version on every replica of the
//! set), ordering mutations, and stepping down at the holder deadline, on
//! loss, on recall, or when a secondary fails.

use std::sync::Arc;

use leasehold_client::{AcquireOptions, LeaseStatus};
use leasehold_proto::gfs::v1 as pb;

use super::{member_to_pb, ChunkState, Inner, PrimaryRole};
use crate::error::GfsError;
use crate::history::{mono_ns, Event};
use crate::names::{chunk_lease, record_bytes_max};
use crate::store::{Member, Meta};

/// A mutation a client asks the primary for.
#[derive(Debug, Clone)]
pub(crate) enum Mutation {
    /// Write `data` at `offset`.
    Write {
        /// Offset.
        offset: u64,
        /// Bytes.
        data: Vec<u8>,
    },
    /// Record append.
    Append {
        /// The record.
        data: Vec<u8>,
    },
}

impl Inner {
    /// `BecomePrimary`: acquires the chunk's lease in this chunkserver's
    /// session and installs this replica's content, stamped with the new
    /// version, on the secondaries. Answers the version and the set that
    /// installed it.
    pub(crate) async fn become_primary(
        self: &Arc<Self>,
        chunk: &str,
        secondaries: Vec<Member>,
        create: bool,
    ) -> Result<(u64, Vec<Member>), GfsError> {
        self.check_alive()?;
        let cell = if create {
            self.cell_or_new(chunk)
        } else {
            self.cell(chunk)?
        };
        let mut st = cell.lock().await;
        self.check_alive()?;
        if create && !self.store.dir().join(format!("{chunk}.meta")).exists() {
            st.meta = self.store.create(chunk)?;
            st.length = 0;
        }
        if let Some(role) = &st.primary {
            if role.lease.is_valid() && role.lease.status() == LeaseStatus::Held {
                let mut set = vec![self.me()];
                set.extend(role.secondaries.iter().cloned());
                return Ok((role.version, set));
            }
            st.primary = None;
        }
        let session = self
            .session()
            .ok_or_else(|| GfsError::Unavailable(format!("{} has no session", self.config.id)))?;
        let metadata = serde_json::to_vec(&self.me()).map_err(|e| GfsError::Disk(e.to_string()))?;
        let content = self.store.read_all(chunk)?;
        let mut secondaries = secondaries;
        let mut attempt = 0;
        // Every attempt must be a newer term than the replica's version and
        // than any earlier attempt of this call: a release that did not
        // reach the service leaves the lease held, and acquiring again would
        // answer the same grant and token — a term whose failed install may
        // already have stamped that version on a replica.
        let mut floor = st.meta.version;
        let (lease, version, installed) = loop {
            attempt += 1;
            let lease = session
                .acquire(
                    &chunk_lease(chunk),
                    AcquireOptions::exclusive().metadata(metadata.clone()),
                )
                .await
                .map_err(|e| match e {
                    leasehold_client::ClientError::Conflict(m) => GfsError::NotPrimary(m),
                    other => GfsError::from(other),
                })?;
            let version = lease.fencing_token();
            if version <= floor {
                // The same grant again (or an older one): refuse rather than
                // reuse its version.
                let _ = lease.release().await;
                return Err(GfsError::StaleVersion(format!(
                    "granted token {version} is not above {floor} (the replica's version or an \
                     earlier attempt's)"
                )));
            }
            let (installed, failed) = self
                .install_all(chunk, version, &content, &secondaries)
                .await;
            if failed == 0 {
                break (lease, version, installed);
            }
            // A failed install may still have stamped the version on that
            // replica, which would then look up to date without receiving
            // this term's mutations: this term takes no write. Give the
            // lease up and start a newer term with the replicas that did
            // install (the others are stale by version).
            if let Err(e) = lease.release().await {
                // Still held: a new attempt would get this very term back.
                return Err(GfsError::Unavailable(format!(
                    "{chunk}: an install failed and the lease could not be given up: {e}"
                )));
            }
            floor = version;
            if attempt >= 3 {
                return Err(GfsError::Unavailable(format!(
                    "{chunk}: installs kept failing"
                )));
            }
            secondaries = installed;
        };
        let mut set = vec![self.me()];
        set.extend(installed.iter().cloned());
        let meta = Meta {
            version,
            replicas: set.clone(),
        };
        self.store.set_meta(chunk, &meta)?;
        self.config.history.record(Event::Install {
            t_ns: mono_ns(),
            chunk: chunk.to_string(),
            version,
            server: self.config.id.clone(),
        });
        st.meta = meta;
        st.last_serial = 0;
        if !self.config.unsafe_ignore_deadline && !lease.is_valid() {
            return Err(GfsError::NotPrimary(format!(
                "lease on {chunk} ended while installing"
            )));
        }
        let status = lease.subscribe();
        st.primary = Some(PrimaryRole {
            lease,
            version,
            secondaries: installed,
        });
        self.publish(chunk, &st);
        self.config.history.record(Event::Primary {
            t_ns: mono_ns(),
            chunk: chunk.to_string(),
            version,
            server: self.config.id.clone(),
            replicas: set.iter().map(|m| m.server_id.clone()).collect(),
        });
        tracing::info!(chunk, version, replicas = set.len(), "became primary");
        drop(st);
        if !self.config.unsafe_ignore_deadline {
            tokio::spawn(watch_lease(
                Arc::clone(self),
                chunk.to_string(),
                version,
                status,
            ));
        }
        Ok((version, set))
    }

    /// A client mutation at the primary: checks the role
    /// (`Lease::is_usable`: held, not recalled, before the holder deadline)
    /// and the version, assigns the next serial, applies locally, forwards
    /// to every secondary, and answers only once every replica of the set
    /// applied it.
    pub(crate) async fn mutate(
        self: &Arc<Self>,
        chunk: &str,
        version: u64,
        mutation: Mutation,
    ) -> Result<pb::MutationReply, GfsError> {
        self.check_alive()?;
        let cell = self.cell(chunk)?;
        let mut st = cell.lock().await;
        self.check_alive()?;
        // The instant of acceptance is read before the lease is checked: the
        // lease was valid then, however long this process pauses after.
        let t_accept = mono_ns();
        let role = st.primary.as_ref().ok_or_else(|| {
            GfsError::NotPrimary(format!("{} is not primary of {chunk}", self.config.id))
        })?;
        if !self.config.unsafe_ignore_deadline {
            match role.lease.status() {
                _ if role.lease.is_usable() => {}
                LeaseStatus::Held => {
                    return Err(GfsError::NotPrimary(format!(
                        "holder deadline of {chunk} passed"
                    )))
                }
                LeaseStatus::Recalled { reason } => {
                    return Err(GfsError::NotPrimary(format!("{chunk} recalled: {reason}")))
                }
                LeaseStatus::Lost { why } => {
                    return Err(GfsError::NotPrimary(format!(
                        "lease on {chunk} lost: {why}"
                    )))
                }
            }
        }
        let term = role.version;
        if version != term {
            return Err(GfsError::StaleVersion(format!(
                "{chunk}: client has version {version}, primary {term}"
            )));
        }
        let chunk_bytes = self.config.chunk_bytes;
        let (offset, data, kind, full) = match mutation {
            Mutation::Write { offset, data } => {
                check_size(&data, chunk_bytes)?;
                if offset.saturating_add(data.len() as u64) > chunk_bytes {
                    return Err(GfsError::InvalidArgument(format!(
                        "offset: {offset} + {} bytes passes the chunk end {chunk_bytes}",
                        data.len()
                    )));
                }
                (offset, data, "write", false)
            }
            Mutation::Append { data } => {
                check_size(&data, chunk_bytes)?;
                let offset = st.length;
                if offset + data.len() as u64 > chunk_bytes {
                    if offset >= chunk_bytes {
                        return Err(GfsError::ChunkFull(format!("{chunk} is full")));
                    }
                    let pad = usize::try_from(chunk_bytes - offset)
                        .map_err(|e| GfsError::Disk(e.to_string()))?;
                    (offset, vec![0u8; pad], "pad", true)
                } else {
                    (offset, data, "append", false)
                }
            }
        };
        let serial = st.last_serial + 1;
        self.config.history.record(Event::Accept {
            t_ns: t_accept,
            chunk: chunk.to_string(),
            version: term,
            server: self.config.id.clone(),
            serial,
            kind: kind.to_string(),
        });
        self.store.write_at(chunk, offset, &data)?;
        st.last_serial = serial;
        st.length = st.length.max(offset + data.len() as u64);
        self.publish(chunk, &st);
        let secondaries = st
            .primary
            .as_ref()
            .map(|r| r.secondaries.clone())
            .unwrap_or_default();
        let len = data.len() as u64;
        let payload: tonic::codegen::Bytes = data.into();
        let calls = secondaries.iter().map(|m| {
            let pool = self.pool.clone();
            let req = pb::ApplyRequest {
                chunk: chunk.to_string(),
                version: term,
                serial,
                offset,
                data: payload.clone(),
            };
            let m = m.clone();
            async move {
                let r = match pool.chunkserver(&m.address) {
                    Ok(mut stub) => stub.apply(req).await.map_err(GfsError::from),
                    Err(e) => Err(e),
                };
                (m, r)
            }
        });
        let mut failed = None;
        for (m, r) in futures::future::join_all(calls).await {
            if let Err(e) = r {
                failed = Some(format!("secondary {} did not apply: {e}", m.server_id));
            }
        }
        if let Some(why) = failed {
            if !self.config.unsafe_ignore_deadline {
                self.step_down(chunk, &mut st, &why).await;
            }
            return Err(GfsError::Unavailable(format!("{chunk}: {why}")));
        }
        if let Some(role) = &st.primary {
            if !self.config.unsafe_ignore_deadline && !role.lease.is_valid() {
                return Err(GfsError::NotPrimary(format!(
                    "lease on {chunk} ended during the mutation"
                )));
            }
        }
        if full {
            return Err(GfsError::ChunkFull(format!(
                "{chunk}: padded {len} bytes at {offset}"
            )));
        }
        Ok(pb::MutationReply {
            offset,
            serial,
            version: term,
            replicas: u32::try_from(secondaries.len() + 1).unwrap_or(u32::MAX),
        })
    }

    /// Ends the primary role of `chunk` and gives its lease up (so the
    /// master can reassign at once).
    pub(crate) async fn step_down(&self, chunk: &str, st: &mut ChunkState, why: &str) {
        let Some(role) = st.primary.take() else {
            return;
        };
        self.publish(chunk, st);
        self.config.history.record(Event::Stepped {
            t_ns: mono_ns(),
            chunk: chunk.to_string(),
            version: role.version,
            server: self.config.id.clone(),
            why: why.to_string(),
        });
        tracing::info!(chunk, version = role.version, why, "stepped down");
        if role.lease.is_valid() || matches!(role.lease.status(), LeaseStatus::Recalled { .. }) {
            if let Err(e) = role.lease.release().await {
                tracing::debug!(chunk, error = %e, "release after stepping down failed");
            }
        }
    }
}

impl Inner {
    /// Installs `content` at `version` on every secondary; answers those
    /// that acknowledged and how many did not.
    async fn install_all(
        &self,
        chunk: &str,
        version: u64,
        content: &[u8],
        secondaries: &[Member],
    ) -> (Vec<Member>, usize) {
        let mut intended = vec![self.me()];
        intended.extend(secondaries.iter().cloned());
        let calls = secondaries.iter().map(|m| {
            let pool = self.pool.clone();
            let req = pb::InstallRequest {
                chunk: chunk.to_string(),
                version,
                data: content.to_vec().into(),
                replicas: intended.iter().map(member_to_pb).collect(),
            };
            let m = m.clone();
            async move {
                let r = match pool.chunkserver(&m.address) {
                    Ok(mut stub) => stub.install(req).await.map_err(GfsError::from),
                    Err(e) => Err(e),
                };
                (m, r)
            }
        });
        let mut installed = Vec::new();
        let mut failed = 0;
        for (m, r) in futures::future::join_all(calls).await {
            match r {
                Ok(_) => installed.push(m),
                Err(e) => {
                    failed += 1;
                    tracing::warn!(chunk, version, secondary = %m.server_id, error = %e, "install failed; term abandoned")
                }
            }
        }
        (installed, failed)
    }
}

/// Refuses mutations larger than a quarter chunk (or empty).
fn check_size(data: &[u8], chunk_bytes: u64) -> Result<(), GfsError> {
    let max = record_bytes_max(chunk_bytes);
    if data.is_empty() || data.len() as u64 > max {
        return Err(GfsError::InvalidArgument(format!(
            "data: want 1 to {max} bytes, got {}",
            data.len()
        )));
    }
    Ok(())
}

/// Steps down when the lease is recalled (after in-flight mutations: the
/// chunk lock) or lost. The holder deadline needs no timer here: the
/// client library's local timer reports it as a loss, and every mutation
/// checks `is_valid` besides.
async fn watch_lease(
    inner: Arc<Inner>,
    chunk: String,
    version: u64,
    mut status: tokio::sync::watch::Receiver<LeaseStatus>,
) {
    let why = loop {
        let s = status.borrow_and_update().clone();
        match s {
            LeaseStatus::Held => {}
            LeaseStatus::Recalled { reason } => break format!("recalled: {reason}"),
            LeaseStatus::Lost { why } => break format!("lost: {why}"),
        }
        if status.changed().await.is_err() {
            break "lease handle dropped".to_string();
        }
    };
    let Ok(cell) = inner.cell(&chunk) else {
        return;
    };
    let mut st = cell.lock().await;
    if st.primary.as_ref().is_some_and(|r| r.version == version) {
        inner.step_down(&chunk, &mut st, &why).await;
    }
}
