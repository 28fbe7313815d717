//! openraft's storage conformance suite against the sled store.

use leasehold_raft::store::{self, LogStore, StateMachineStore};
use leasehold_raft::types::StorageError;
use leasehold_raft::TypeConfig;
use openraft::testing::{StoreBuilder, Suite};
use openraft::{AnyError, StorageIOError};
use tempfile::TempDir;

/// Opens every store in a fresh temporary directory.
struct TempDirStoreBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for TempDirStoreBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError> {
        let dir = tempfile::tempdir().map_err(|e| StorageIOError::write(AnyError::new(&e)))?;
        let (log, sm) =
            store::open(dir.path()).map_err(|e| StorageIOError::write(AnyError::new(&e)))?;
        // The guard keeps the directory alive as long as the stores.
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() -> anyhow::Result<()> {
    // Runs every case of the suite, each on a fresh store, each in its own
    // runtime; the first failure is returned.
    Suite::test_all(TempDirStoreBuilder)?;
    Ok(())
}
