//! The `Master` gRPC service.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use leasehold_proto::gfs::v1 as pb;
use pb::master_server::Master;
use tonic::{Request, Response, Status};

use super::MasterInner;
use crate::error::GfsError;
use crate::names::{check_chunk, chunk_lease, REPLICATION_DEFAULT, REPLICATION_MAX};

/// The service over a master's shared state.
#[derive(Debug, Clone)]
pub(crate) struct MasterService {
    /// Shared state.
    inner: Arc<MasterInner>,
}

impl MasterService {
    /// Serves `inner`.
    pub(crate) fn new(inner: Arc<MasterInner>) -> Self {
        MasterService { inner }
    }

    /// Fails every call of a killed master.
    fn check_alive(&self) -> Result<(), GfsError> {
        if self.inner.killed.load(Ordering::SeqCst) {
            return Err(GfsError::Unavailable("master is down".into()));
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl Master for MasterService {
    async fn report(
        &self,
        request: Request<pb::ReportRequest>,
    ) -> Result<Response<pb::ReportReply>, Status> {
        self.check_alive()?;
        self.inner.report(request.into_inner());
        Ok(Response::new(pb::ReportReply {
            is_master: self.inner.is_master(),
        }))
    }

    async fn create_chunk(
        &self,
        request: Request<pb::CreateChunkRequest>,
    ) -> Result<Response<pb::Location>, Status> {
        self.check_alive()?;
        let req = request.into_inner();
        check_chunk(&req.chunk)?;
        let replication = match req.replication {
            0 => REPLICATION_DEFAULT,
            n if n > REPLICATION_MAX => {
                return Err(GfsError::InvalidArgument(format!(
                    "replication: at most {REPLICATION_MAX}, got {n}"
                ))
                .into())
            }
            n => n,
        };
        self.inner.require_master().await?;
        if !self.inner.settled() {
            return Err(GfsError::Unavailable(
                "newly elected: waiting for chunkserver reports".into(),
            )
            .into());
        }
        Ok(Response::new(
            self.inner.create(&req.chunk, replication).await?,
        ))
    }

    async fn locate(
        &self,
        request: Request<pb::LocateRequest>,
    ) -> Result<Response<pb::Location>, Status> {
        self.check_alive()?;
        let req = request.into_inner();
        check_chunk(&req.chunk)?;
        self.inner.require_master().await?;
        Ok(Response::new(self.inner.locate(&req.chunk).await?))
    }

    async fn recall_primary(
        &self,
        request: Request<pb::RecallPrimaryRequest>,
    ) -> Result<Response<pb::RecallPrimaryReply>, Status> {
        self.check_alive()?;
        let req = request.into_inner();
        check_chunk(&req.chunk)?;
        self.inner.require_master().await?;
        let resource = chunk_lease(&req.chunk);
        let version = self
            .inner
            .leasehold
            .get(&resource)
            .await
            .map_err(GfsError::from)?
            .holders
            .first()
            .map_or(0, |h| h.fencing_token);
        if !req.prefer.is_empty() {
            self.inner
                .state()
                .prefer
                .insert(req.chunk.clone(), req.prefer.clone());
        }
        let reason = if req.reason.is_empty() {
            "recall".to_string()
        } else {
            req.reason
        };
        self.inner
            .leasehold
            .recall(&resource, &reason)
            .await
            .map_err(GfsError::from)?;
        self.inner.counters.recalls.fetch_add(1, Ordering::Relaxed);
        tracing::info!(chunk = %req.chunk, version, reason, "recalled the primary");
        Ok(Response::new(pb::RecallPrimaryReply { version }))
    }

    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusReply>, Status> {
        self.check_alive()?;
        let holders: Vec<_> = {
            let st = self.inner.state();
            let mut h: Vec<_> = st
                .holders
                .iter()
                .map(|(c, h)| (c.clone(), h.clone()))
                .collect();
            h.sort_by(|a, b| a.0.cmp(&b.0));
            h
        };
        let chunks = holders
            .iter()
            .map(|(c, h)| self.inner.location(c, &h.member, h.version))
            .collect();
        let chunks_known = self.inner.state().max_version.len() as u64;
        let c = &self.inner.counters;
        Ok(Response::new(pb::StatusReply {
            master_id: self.inner.config.id.clone(),
            is_master: self.inner.is_master(),
            chunks,
            reassignments: c.reassignments.load(Ordering::Relaxed),
            recalls: c.recalls.load(Ordering::Relaxed),
            re_replications: c.re_replications.load(Ordering::Relaxed),
            chunks_known,
        }))
    }
}
