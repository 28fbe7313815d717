//! The durability guard: a small file next to sled's that remembers how
//! far the store had durably got, so that a store that silently went back
//! is refused at open.
//!
//! Why: sled 0.34 recovers its log by reading records until one fails its
//! checksum and treats everything after as a torn write. A damaged block
//! in the middle of the log therefore opens *without an error*, as an
//! older state that lacks writes it had acknowledged (measured: one bad
//! block cost a 3000-session store up to its last 600 sessions). A Raft node
//! that comes back like that may vote twice in a term or serve leases
//! from a state that missed grants.
//!
//! What: after every successful flush, the flusher records the vote's
//! term, the committed index and the applied index as they were when the
//! flush began (everything read then is durable once it returns). All
//! three only grow. At open, a store whose values are below the guard's is
//! [`StoreError::Corrupt`]. The record is written in place, alternating
//! between two checksummed slots with a sequence number, and not fsynced
//! on its own: after a power loss it may be older than sled (a weaker
//! check, never a false alarm), and a torn write spoils one slot only.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Mutex;

use super::error::StoreError;
use super::keys;

/// File name of the guard in the data directory.
pub(crate) const GUARD_FILE: &str = "leasehold.guard";
/// Bytes of one slot (two slots in the file).
const SLOT_BYTES: usize = 64;
/// Bytes of a slot covered by its checksum.
const SUMMED_BYTES: usize = 48;
/// First bytes of a valid slot.
const MAGIC: [u8; 8] = *b"LHGUARD1";

/// How far the store had durably got. Indexes are stored plus one, so
/// that 0 means "none".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Mark {
    /// Term of the saved vote.
    pub(crate) vote_term: u64,
    /// Committed log index + 1 (0: none saved).
    pub(crate) committed: u64,
    /// Applied log index + 1 (0: nothing applied).
    pub(crate) applied: u64,
}

impl Mark {
    /// Reads the current values from the database.
    pub(crate) fn read(db: &sled::Db) -> Result<Mark, StoreError> {
        let vote = keys::get_meta(db, &keys::VOTE)?;
        let committed = keys::get_meta(db, &keys::COMMITTED)?;
        let applied = keys::get_meta(db, &keys::LAST_APPLIED)?;
        Ok(Mark {
            vote_term: vote.map_or(0, |v| v.leader_id().term),
            committed: committed.map_or(0, |l| l.index + 1),
            applied: applied.map_or(0, |l| l.index + 1),
        })
    }

    /// What of `self` went back compared with `durable`, if anything.
    pub(crate) fn behind(&self, durable: &Mark) -> Option<String> {
        let mut lost = Vec::new();
        let fields = [
            ("vote term", self.vote_term, durable.vote_term),
            ("committed index+1", self.committed, durable.committed),
            ("applied index+1", self.applied, durable.applied),
        ];
        for (name, now, before) in fields {
            if now < before {
                lost.push(format!("{name} is {now}, was durably {before}"));
            }
        }
        (!lost.is_empty()).then(|| lost.join(", "))
    }
}

/// FNV-1a, 64 bits: the slot checksum (no dependency for 48 bytes).
fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Encodes a slot.
fn encode(seq: u64, mark: &Mark) -> [u8; SLOT_BYTES] {
    let mut slot = [0u8; SLOT_BYTES];
    slot[0..8].copy_from_slice(&MAGIC);
    slot[8..16].copy_from_slice(&seq.to_be_bytes());
    slot[16..24].copy_from_slice(&mark.vote_term.to_be_bytes());
    slot[24..32].copy_from_slice(&mark.committed.to_be_bytes());
    slot[32..40].copy_from_slice(&mark.applied.to_be_bytes());
    let sum = checksum(&slot[..SUMMED_BYTES]);
    slot[SUMMED_BYTES..SUMMED_BYTES + 8].copy_from_slice(&sum.to_be_bytes());
    slot
}

/// Decodes a slot: its sequence number and mark, if it is valid.
fn decode(slot: &[u8]) -> Option<(u64, Mark)> {
    let word = |at: usize| -> Option<u64> {
        Some(u64::from_be_bytes(slot.get(at..at + 8)?.try_into().ok()?))
    };
    if slot.get(0..8)? != MAGIC || word(SUMMED_BYTES)? != checksum(slot.get(..SUMMED_BYTES)?) {
        return None;
    }
    Some((
        word(8)?,
        Mark {
            vote_term: word(16)?,
            committed: word(24)?,
            applied: word(32)?,
        },
    ))
}

/// The open guard file.
pub(crate) struct Guard {
    /// The file, written in place.
    file: File,
    /// Sequence number of the last record written (the flusher writes one
    /// at a time; the lock only makes that explicit).
    seq: Mutex<u64>,
}

impl Guard {
    /// Opens (or creates) the guard in `dir`; returns it and the last mark
    /// it recorded, if any.
    pub(crate) fn open(dir: &Path) -> Result<(Guard, Option<Mark>), StoreError> {
        let path = dir.join(GUARD_FILE);
        let io = |source: std::io::Error| StoreError::Guard {
            path: path.clone(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let mut raw = [0u8; 2 * SLOT_BYTES];
        let read = if len == 0 {
            0
        } else {
            let want = usize::try_from(len).map_or(raw.len(), |l| l.min(raw.len()));
            file.read_exact_at(&mut raw[..want], 0).map_err(io)?;
            want
        };
        let best = raw[..read]
            .chunks(SLOT_BYTES)
            .filter_map(decode)
            .max_by_key(|(seq, _)| *seq);
        if read > 0 && best.is_none() {
            return Err(StoreError::Corrupt {
                path: dir.to_path_buf(),
                detail: format!("its durability guard {GUARD_FILE} is damaged"),
            });
        }
        let seq = best.map_or(0, |(seq, _)| seq);
        Ok((
            Guard {
                file,
                seq: Mutex::new(seq),
            },
            best.map(|(_, mark)| mark),
        ))
    }

    /// Records `mark` (durable in sled already) in the older slot.
    pub(crate) fn record(&self, mark: &Mark) -> std::io::Result<()> {
        let mut seq = self.seq.lock().unwrap_or_else(|p| p.into_inner());
        let next = *seq + 1;
        let offset = (next % 2) * SLOT_BYTES as u64;
        self.file.write_all_at(&encode(next, mark), offset)?;
        *seq = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_round_trip_and_damage_is_detected() {
        let mark = Mark {
            vote_term: 3,
            committed: 10,
            applied: 9,
        };
        let mut slot = encode(7, &mark);
        assert_eq!(decode(&slot), Some((7, mark)));
        slot[20] ^= 1;
        assert_eq!(decode(&slot), None);
        assert_eq!(
            Mark::default().behind(&mark).as_deref(),
            Some("vote term is 0, was durably 3, committed index+1 is 0, was durably 10, applied index+1 is 0, was durably 9")
        );
        assert_eq!(mark.behind(&Mark::default()), None);
    }

    #[test]
    fn the_newest_valid_slot_wins() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Task(e.to_string()))?;
        let (guard, none) = Guard::open(dir.path())?;
        assert_eq!(none, None);
        for committed in 1..=5 {
            guard
                .record(&Mark {
                    vote_term: 1,
                    committed,
                    applied: committed,
                })
                .map_err(|e| StoreError::Task(e.to_string()))?;
        }
        drop(guard);
        let (_, last) = Guard::open(dir.path())?;
        assert_eq!(last.map(|m| m.committed), Some(5));
        // A torn newest slot: the other one (one record older) counts.
        let path = dir.path().join(GUARD_FILE);
        let mut raw = std::fs::read(&path).map_err(|e| StoreError::Task(e.to_string()))?;
        raw[SLOT_BYTES + 30] ^= 0xff; // seq 5 is in slot 1
        std::fs::write(&path, &raw).map_err(|e| StoreError::Task(e.to_string()))?;
        let (_, last) = Guard::open(dir.path())?;
        assert_eq!(last.map(|m| m.committed), Some(4));
        Ok(())
    }
}
