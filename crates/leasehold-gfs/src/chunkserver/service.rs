//! The `Chunkserver` gRPC service, and the replica side of the protocol:
//! apply a forwarded mutation, install a new version, read.

use std::sync::Arc;

use leasehold_proto::gfs::v1 as pb;
use pb::chunkserver_server::Chunkserver;
use tonic::{Request, Response, Status};

use super::primary::Mutation;
use super::{member_from_pb, Inner};
use crate::error::GfsError;
use crate::history::{mono_ns, Event};
use crate::names::check_chunk;
use crate::store::Meta;

/// The service over a chunkserver's shared state.
#[derive(Debug, Clone)]
pub(crate) struct ChunkService {
    /// Shared state.
    inner: Arc<Inner>,
}

impl ChunkService {
    /// Serves `inner`.
    pub(crate) fn new(inner: Arc<Inner>) -> Self {
        ChunkService { inner }
    }

    /// Runs a mutation in its own task: a client that gives up does not
    /// cut it off between the local apply and the forwarding.
    async fn mutate(
        &self,
        chunk: String,
        version: u64,
        m: Mutation,
    ) -> Result<pb::MutationReply, GfsError> {
        let inner = Arc::clone(&self.inner);
        tokio::spawn(async move { inner.mutate(&chunk, version, m).await })
            .await
            .map_err(|e| GfsError::Unavailable(format!("mutation task: {e}")))?
    }
}

impl Inner {
    /// Applies mutation `serial` of the primary's term `version`: only at
    /// exactly this replica's version, and only the next serial.
    async fn apply(&self, req: pb::ApplyRequest) -> Result<(), GfsError> {
        self.check_alive()?;
        let cell = self.cell(&req.chunk)?;
        let mut st = cell.lock().await;
        self.check_alive()?;
        if req.version != st.meta.version {
            return Err(GfsError::StaleVersion(format!(
                "{}: mutation of version {}, replica {} at {}",
                req.chunk, req.version, self.config.id, st.meta.version
            )));
        }
        if req.serial != st.last_serial + 1 {
            return Err(GfsError::StaleVersion(format!(
                "{}: serial {} after {}",
                req.chunk, req.serial, st.last_serial
            )));
        }
        let end = req.offset.saturating_add(req.data.len() as u64);
        if end > self.config.chunk_bytes {
            return Err(GfsError::InvalidArgument(format!(
                "offset: {end} passes the chunk end"
            )));
        }
        self.store.write_at(&req.chunk, req.offset, &req.data)?;
        st.last_serial = req.serial;
        st.length = st.length.max(end);
        self.publish(&req.chunk, &st);
        Ok(())
    }

    /// Replaces the replica with a new primary's content at a newer version.
    async fn install(&self, req: pb::InstallRequest) -> Result<(), GfsError> {
        self.check_alive()?;
        check_chunk(&req.chunk)?;
        let cell = self.cell_or_new(&req.chunk);
        let mut st = cell.lock().await;
        self.check_alive()?;
        if req.version <= st.meta.version {
            return Err(GfsError::StaleVersion(format!(
                "{}: install of version {}, replica at {}",
                req.chunk, req.version, st.meta.version
            )));
        }
        if st.primary.is_some() && !self.config.unsafe_ignore_deadline {
            let why = format!("superseded by version {}", req.version);
            self.step_down(&req.chunk, &mut st, &why).await;
        }
        let meta = Meta {
            version: req.version,
            replicas: req.replicas.iter().map(member_from_pb).collect(),
        };
        self.store.install(&req.chunk, &req.data, &meta)?;
        st.meta = meta;
        st.length = req.data.len() as u64;
        st.last_serial = 0;
        self.publish(&req.chunk, &st);
        self.config.history.record(Event::Install {
            t_ns: mono_ns(),
            chunk: req.chunk.clone(),
            version: req.version,
            server: self.config.id.clone(),
        });
        Ok(())
    }

    /// Reads bytes, refusing if the replica is older than `min_version`.
    async fn read(&self, req: pb::ReadRequest) -> Result<pb::ReadReply, GfsError> {
        self.check_alive()?;
        let cell = self.cell(&req.chunk)?;
        let st = cell.lock().await;
        if st.meta.version < req.min_version {
            return Err(GfsError::StaleVersion(format!(
                "{}: replica {} at version {}, want {}",
                req.chunk, self.config.id, st.meta.version, req.min_version
            )));
        }
        let len = req.length.min(self.config.chunk_bytes);
        let data = self.store.read(&req.chunk, req.offset, len)?;
        Ok(pb::ReadReply {
            data: data.into(),
            version: st.meta.version,
        })
    }
}

#[tonic::async_trait]
impl Chunkserver for ChunkService {
    async fn become_primary(
        &self,
        request: Request<pb::BecomePrimaryRequest>,
    ) -> Result<Response<pb::BecomePrimaryReply>, Status> {
        let req = request.into_inner();
        check_chunk(&req.chunk)?;
        let secondaries = req.secondaries.iter().map(member_from_pb).collect();
        // In its own task: a master that gives up waiting must not cut an
        // assignment off halfway.
        let inner = Arc::clone(&self.inner);
        let (version, set) = tokio::spawn(async move {
            inner
                .become_primary(&req.chunk, secondaries, req.create)
                .await
        })
        .await
        .map_err(|e| GfsError::Unavailable(format!("become_primary task: {e}")))??;
        Ok(Response::new(pb::BecomePrimaryReply {
            version,
            replicas: set.iter().map(super::member_to_pb).collect(),
        }))
    }

    async fn write(
        &self,
        request: Request<pb::WriteRequest>,
    ) -> Result<Response<pb::MutationReply>, Status> {
        let req = request.into_inner();
        check_chunk(&req.chunk)?;
        let m = Mutation::Write {
            offset: req.offset,
            data: req.data.to_vec(),
        };
        Ok(Response::new(self.mutate(req.chunk, req.version, m).await?))
    }

    async fn append(
        &self,
        request: Request<pb::AppendRequest>,
    ) -> Result<Response<pb::MutationReply>, Status> {
        let req = request.into_inner();
        check_chunk(&req.chunk)?;
        let m = Mutation::Append {
            data: req.data.to_vec(),
        };
        Ok(Response::new(self.mutate(req.chunk, req.version, m).await?))
    }

    async fn apply(
        &self,
        request: Request<pb::ApplyRequest>,
    ) -> Result<Response<pb::ApplyReply>, Status> {
        self.inner.apply(request.into_inner()).await?;
        Ok(Response::new(pb::ApplyReply {}))
    }

    async fn install(
        &self,
        request: Request<pb::InstallRequest>,
    ) -> Result<Response<pb::InstallReply>, Status> {
        self.inner.install(request.into_inner()).await?;
        Ok(Response::new(pb::InstallReply {}))
    }

    async fn read(
        &self,
        request: Request<pb::ReadRequest>,
    ) -> Result<Response<pb::ReadReply>, Status> {
        Ok(Response::new(self.inner.read(request.into_inner()).await?))
    }
}
