//! gRPC channels to other processes: one lazily connected channel per
//! address, with connect and per-call timeouts, shared by a role's tasks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use leasehold_proto::gfs::v1::chunkserver_client::ChunkserverClient;
use leasehold_proto::gfs::v1::master_client::MasterClient;
use tonic::transport::{Channel, Endpoint};

use crate::error::GfsError;

/// Most channels a pool keeps (addresses of a cluster: a handful).
pub const CHANNELS_MAX: usize = 1_024;

/// Channels by address.
#[derive(Debug, Clone)]
pub struct Pool {
    /// Open channels.
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    /// Timeout of each call.
    call_timeout: Duration,
}

impl Pool {
    /// A pool whose calls time out after `call_timeout`.
    pub fn new(call_timeout: Duration) -> Self {
        Pool {
            channels: Arc::new(Mutex::new(HashMap::new())),
            call_timeout,
        }
    }

    /// The channel to `address` (host:port).
    pub fn channel(&self, address: &str) -> Result<Channel, GfsError> {
        let mut map = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = map.get(address) {
            return Ok(c.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|e| GfsError::InvalidArgument(format!("address {address:?}: {e}")))?
            .connect_timeout(self.call_timeout.min(Duration::from_secs(1)))
            .timeout(self.call_timeout)
            .tcp_nodelay(true);
        let channel = endpoint.connect_lazy();
        if map.len() >= CHANNELS_MAX {
            map.clear();
        }
        map.insert(address.to_string(), channel.clone());
        Ok(channel)
    }

    /// A chunkserver stub.
    pub fn chunkserver(&self, address: &str) -> Result<ChunkserverClient<Channel>, GfsError> {
        Ok(ChunkserverClient::new(self.channel(address)?))
    }

    /// A master stub.
    pub fn master(&self, address: &str) -> Result<MasterClient<Channel>, GfsError> {
        Ok(MasterClient::new(self.channel(address)?))
    }
}
