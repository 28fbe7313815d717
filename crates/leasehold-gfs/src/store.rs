//! Chunk replicas on local disk: `DIR/C.data` holds chunk `C`'s bytes,
//! `DIR/C.meta` (JSON) beside it its version and the replica set stamped
//! with that version. Every change is fsynced before it is acknowledged;
//! whole-file replacements (install, meta) go through a temporary file and
//! a rename, so a crash leaves the old or the new file, never a mix.
//!
//! Installing writes the data before the meta: a crash in between leaves
//! new bytes under the old version, which the master treats as stale.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::GfsError;
use crate::names::check_chunk;

/// One member of a replica set, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Chunkserver id.
    pub server_id: String,
    /// Its address.
    pub address: String,
}

/// What is stored beside a chunk's data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Meta {
    /// The version the replica is stamped with (0: created, never stamped).
    pub version: u64,
    /// The replica set of that version.
    pub replicas: Vec<Member>,
}

/// A chunkserver's replicas on disk.
#[derive(Debug, Clone)]
pub struct Store {
    /// The directory.
    dir: PathBuf,
}

impl Store {
    /// Opens (creating) the directory.
    pub fn open(dir: &Path) -> Result<Store, GfsError> {
        std::fs::create_dir_all(dir)?;
        Ok(Store {
            dir: dir.to_path_buf(),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of a chunk's data.
    fn data_path(&self, chunk: &str) -> PathBuf {
        self.dir.join(format!("{chunk}.data"))
    }

    /// Path of a chunk's meta.
    fn meta_path(&self, chunk: &str) -> PathBuf {
        self.dir.join(format!("{chunk}.meta"))
    }

    /// Every stored chunk with its meta and length (temporary files and
    /// unreadable metas are skipped).
    pub fn scan(&self) -> Result<BTreeMap<String, (Meta, u64)>, GfsError> {
        let mut out = BTreeMap::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().to_string();
            let Some(chunk) = name.strip_suffix(".meta") else {
                continue;
            };
            if check_chunk(chunk).is_err() {
                continue;
            }
            match self.meta(chunk) {
                Ok(meta) => {
                    let len = self.len(chunk)?;
                    out.insert(chunk.to_string(), (meta, len));
                }
                Err(e) => tracing::warn!(chunk, error = %e, "skipping unreadable chunk meta"),
            }
        }
        Ok(out)
    }

    /// Reads a chunk's meta.
    pub fn meta(&self, chunk: &str) -> Result<Meta, GfsError> {
        let text = std::fs::read(self.meta_path(chunk))?;
        serde_json::from_slice(&text).map_err(|e| GfsError::Disk(format!("{chunk}.meta: {e}")))
    }

    /// Bytes stored of a chunk (0 if its data file is missing).
    pub fn len(&self, chunk: &str) -> Result<u64, GfsError> {
        match std::fs::metadata(self.data_path(chunk)) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e.into()),
        }
    }

    /// Creates an empty replica at version 0 (keeps an existing one).
    pub fn create(&self, chunk: &str) -> Result<Meta, GfsError> {
        if self.meta_path(chunk).exists() {
            return self.meta(chunk);
        }
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data_path(chunk))?;
        f.sync_all()?;
        let meta = Meta::default();
        self.set_meta(chunk, &meta)?;
        Ok(meta)
    }

    /// Replaces a chunk's meta (atomically, fsynced).
    pub fn set_meta(&self, chunk: &str, meta: &Meta) -> Result<(), GfsError> {
        let bytes = serde_json::to_vec(meta).map_err(|e| GfsError::Disk(e.to_string()))?;
        self.replace(&self.meta_path(chunk), &bytes)
    }

    /// Writes `data` at `offset` and fsyncs.
    pub fn write_at(&self, chunk: &str, offset: u64, data: &[u8]) -> Result<(), GfsError> {
        let f = OpenOptions::new().write(true).open(self.data_path(chunk))?;
        f.write_all_at(data, offset)?;
        f.sync_data()?;
        Ok(())
    }

    /// Reads at most `len` bytes at `offset` (fewer at the end).
    pub fn read(&self, chunk: &str, offset: u64, len: u64) -> Result<Vec<u8>, GfsError> {
        let f = File::open(self.data_path(chunk))?;
        let size = f.metadata()?.len();
        let end = offset.saturating_add(len).min(size);
        if offset >= end {
            return Ok(Vec::new());
        }
        let n = usize::try_from(end - offset).map_err(|e| GfsError::Disk(e.to_string()))?;
        let mut buf = vec![0u8; n];
        f.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }

    /// The whole content.
    pub fn read_all(&self, chunk: &str) -> Result<Vec<u8>, GfsError> {
        match std::fs::read(self.data_path(chunk)) {
            Ok(b) => Ok(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e.into()),
        }
    }

    /// Replaces the whole replica: data first, then the meta stamping it
    /// with `meta.version`.
    pub fn install(&self, chunk: &str, data: &[u8], meta: &Meta) -> Result<(), GfsError> {
        self.replace(&self.data_path(chunk), data)?;
        self.set_meta(chunk, meta)
    }

    /// Writes `bytes` to a temporary file, fsyncs it, renames it over
    /// `path` and fsyncs the directory.
    fn replace(&self, path: &Path, bytes: &[u8]) -> Result<(), GfsError> {
        let tmp = path.with_extension("tmp");
        {
            let mut f = File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        File::open(&self.dir)?.sync_all()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_write_install_scan() -> Result<(), GfsError> {
        let dir = tempfile::tempdir()?;
        let s = Store::open(dir.path())?;
        assert_eq!(s.create("c1")?.version, 0);
        s.write_at("c1", 4, b"abc")?;
        assert_eq!(s.read_all("c1")?, b"\0\0\0\0abc");
        assert_eq!(s.read("c1", 5, 10)?, b"bc");
        let meta = Meta {
            version: 9,
            replicas: vec![Member {
                server_id: "cs1".into(),
                address: "a".into(),
            }],
        };
        s.install("c2", b"xyz", &meta)?;
        let all = s.scan()?;
        assert_eq!(all.len(), 2);
        assert_eq!(all["c2"], (meta, 3));
        assert_eq!(all["c1"].1, 7);
        Ok(())
    }
}
