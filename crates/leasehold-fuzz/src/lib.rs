//! Shared helpers of Leasehold's fuzz targets (`fuzz_targets/`).
//!
//! - [`CommandGen`]: builds [`Command`]s from fuzz bytes, biased towards
//!   commands that do something (open sessions, names from a small pool,
//!   mostly the right secrets), so apply gets past its first checks.
//! - [`Replica`] / [`run_log`]: applies a log of such commands to two
//!   replicas the way the server's state machine does (strictly increasing
//!   indexes, blank and membership entries in between), checking after
//!   every entry the state's invariants, that both replicas answer the
//!   same, and at the end that their encodings are identical and decode
//!   back to the same state.
//!
//! Nothing here reimplements production logic: every check calls the real
//! function (`LeaseState::apply`, `check_invariants`, `encode`, `decode`).

use libfuzzer_sys::arbitrary::{self, Unstructured};

use leasehold_core::limits;
use leasehold_core::{
    Acquire, Command, LeaseConfig, LeaseState, Mode, SessionRef, SessionSecret, SessionTarget,
};

/// Most log entries one fuzz input applies (keeps an input's run short).
pub const ENTRIES_MAX: usize = 256;
/// Most commands in one generated batch entry (the core allows
/// [`limits::BATCH_COMMANDS_MAX`]; more only slows the fuzzer down).
pub const BATCH_GEN_MAX: usize = 8;
/// Resource names most commands pick from, so commands meet each other.
const NAMES: [&str; 5] = ["a", "b", "c", "db/primary", "queue/7"];

/// Builds commands from fuzz bytes for a given state.
pub struct CommandGen<'u, 'a> {
    /// The fuzz bytes left.
    pub u: &'u mut Unstructured<'a>,
}

impl<'u, 'a> CommandGen<'u, 'a> {
    /// A resource name: mostly from [`NAMES`], sometimes arbitrary (empty,
    /// too long, any UTF-8) to reach the validation paths.
    fn name(&mut self) -> arbitrary::Result<String> {
        Ok(match self.u.int_in_range(0..=15u8)? {
            0 => String::new(),
            1 => "x"
                .repeat(limits::RESOURCE_NAME_BYTES_MAX + usize::from(self.u.arbitrary::<bool>()?)),
            2 | 3 => self.u.arbitrary::<String>()?,
            _ => NAMES[self.u.choose_index(NAMES.len())?].to_string(),
        })
    }

    /// A short text of up to `max + 1` bytes (one past the limit sometimes).
    fn text(&mut self, max: usize) -> arbitrary::Result<String> {
        Ok(match self.u.int_in_range(0..=7u8)? {
            0 => "r".repeat(max + 1),
            1 => "r".repeat(max),
            2 => self.u.arbitrary::<String>()?,
            _ => String::new(),
        })
    }

    /// Metadata bytes, sometimes at or past the limit.
    fn metadata(&mut self) -> arbitrary::Result<Vec<u8>> {
        Ok(match self.u.int_in_range(0..=7u8)? {
            0 => vec![7; limits::METADATA_BYTES_MAX + 1],
            1 => vec![7; limits::METADATA_BYTES_MAX],
            2 => self.u.arbitrary::<Vec<u8>>()?,
            _ => Vec::new(),
        })
    }

    /// A session id: mostly an open one, sometimes any number.
    fn session_id(&mut self, state: &LeaseState) -> arbitrary::Result<u64> {
        let open: Vec<u64> = state.sessions().map(|s| s.id).collect();
        if open.is_empty() || self.u.int_in_range(0..=7u8)? == 0 {
            return self.u.arbitrary();
        }
        Ok(open[self.u.choose_index(open.len())?])
    }

    /// A session named with its secret: mostly the right one.
    fn session_ref(&mut self, state: &LeaseState) -> arbitrary::Result<SessionRef> {
        let id = self.session_id(state)?;
        let secret = match state.session(id) {
            Some(s) if self.u.int_in_range(0..=7u8)? != 0 => s.secret,
            _ => SessionSecret(self.u.arbitrary()?),
        };
        Ok(SessionRef { id, secret })
    }

    /// A TTL: mostly within the configured bounds.
    fn ttl_ms(&mut self, config: &LeaseConfig) -> arbitrary::Result<u64> {
        Ok(match self.u.int_in_range(0..=7u8)? {
            0 => self.u.arbitrary()?,
            1 => config.ttl_ms_min.saturating_sub(1),
            2 => config.ttl_ms_max.saturating_add(1),
            // A decoded state's configuration is valid (min <= max); stay
            // total anyway so a bad one is reported by the checks, not here.
            _ => {
                let (lo, hi) = (config.ttl_ms_min, config.ttl_ms_max);
                self.u.int_in_range(lo.min(hi)..=hi.max(lo))?
            }
        })
    }

    /// A request id: mostly none, else from a tiny range so retries meet.
    fn request_id(&mut self) -> arbitrary::Result<u64> {
        Ok(match self.u.int_in_range(0..=3u8)? {
            0 => self.u.int_in_range(1..=4u64)?,
            _ => 0,
        })
    }

    /// A configuration: mostly valid, sometimes any values.
    fn config(&mut self) -> arbitrary::Result<LeaseConfig> {
        if self.u.arbitrary::<bool>()? {
            return Ok(LeaseConfig {
                ttl_ms_min: self.u.arbitrary()?,
                ttl_ms_max: self.u.arbitrary()?,
                drift_ppm: self.u.arbitrary()?,
                grace_margin_ms: self.u.arbitrary()?,
                vote_window_ms: self.u.arbitrary()?,
            });
        }
        let ttl_ms_min = self.u.int_in_range(limits::TTL_MS_FLOOR..=10_000)?;
        Ok(LeaseConfig {
            ttl_ms_min,
            ttl_ms_max: self.u.int_in_range(ttl_ms_min..=limits::TTL_MS_CEILING)?,
            drift_ppm: self.u.int_in_range(0..=limits::DRIFT_PPM_MAX)?,
            grace_margin_ms: self.u.int_in_range(0..=limits::GRACE_MARGIN_MS_MAX)?,
            vote_window_ms: self.u.int_in_range(0..=ttl_ms_min / 2)?,
        })
    }

    /// One command that is not a batch.
    pub fn single(&mut self, state: &LeaseState) -> arbitrary::Result<Command> {
        let config = *state.config();
        Ok(match self.u.int_in_range(0..=15u8)? {
            0 | 1 => Command::OpenSession {
                client_name: self.text(limits::CLIENT_NAME_BYTES_MAX)?,
                ttl_ms: self.ttl_ms(&config)?,
                secret: SessionSecret(self.u.arbitrary()?),
                request_id: self.request_id()?,
            },
            2 => Command::CloseSession {
                session: self.session_ref(state)?,
            },
            3..=6 => {
                let session = if self.u.int_in_range(0..=3u8)? == 0 {
                    SessionTarget::Private {
                        client_name: self.text(limits::CLIENT_NAME_BYTES_MAX)?,
                        ttl_ms: self.ttl_ms(&config)?,
                        secret: SessionSecret(self.u.arbitrary()?),
                        request_id: self.request_id()?,
                    }
                } else {
                    SessionTarget::Existing(self.session_ref(state)?)
                };
                Command::Acquire(Acquire {
                    session,
                    resource: self.name()?,
                    mode: if self.u.arbitrary()? {
                        Mode::Shared
                    } else {
                        Mode::Exclusive
                    },
                    wait: self.u.arbitrary()?,
                    metadata: self.metadata()?,
                })
            }
            7 => Command::CancelWait {
                session: self.session_id(state)?,
                resource: self.name()?,
            },
            8 => Command::AbandonWait {
                session: self.session_id(state)?,
                resource: self.name()?,
                // Near the current position, where queue places are.
                queued_at: state
                    .position()
                    .saturating_sub(self.u.int_in_range(0..=8u64)?),
            },
            9 | 10 => Command::Release {
                session: self.session_ref(state)?,
                resource: self.name()?,
            },
            11 => {
                let n = self.u.int_in_range(0..=3usize)?;
                let mut sessions = Vec::with_capacity(n);
                for _ in 0..n {
                    sessions.push(self.session_id(state)?);
                }
                if self.u.int_in_range(0..=31u8)? == 0 {
                    // Past the per-command limit: must be refused whole.
                    sessions.resize(limits::EXPIRE_BATCH_MAX + 1, 1);
                }
                Command::ExpireSessions { sessions }
            }
            12 | 13 => Command::Recall {
                resource: self.name()?,
                reason: self.text(limits::REASON_BYTES_MAX)?,
            },
            14 => Command::SetConfig(self.config()?),
            _ => {
                // A batch inside a batch is refused; an empty one too.
                Command::Batch(Vec::new())
            }
        })
    }

    /// One log entry's command: mostly single commands, sometimes a batch.
    /// A batch's later commands are generated against the state before the
    /// entry (as a proposer would queue them), so they may name sessions
    /// the batch itself closes.
    pub fn entry(&mut self, state: &LeaseState) -> arbitrary::Result<Command> {
        if self.u.int_in_range(0..=5u8)? != 0 {
            return self.single(state);
        }
        let n = self.u.int_in_range(0..=BATCH_GEN_MAX)?;
        let mut commands = Vec::with_capacity(n);
        for _ in 0..n {
            commands.push(self.single(state)?);
        }
        Ok(Command::Batch(commands))
    }
}

/// Two replicas fed the same entries, and the last index applied.
pub struct Replica {
    /// The replica whose answers are checked.
    pub state: LeaseState,
    /// A second replica fed the same entries: apply must be deterministic.
    pub twin: LeaseState,
    /// Index of the last entry applied (indexes strictly increase).
    pub index: u64,
}

impl Replica {
    /// Two replicas starting from `state`, whose last applied entry is
    /// `index`.
    pub fn new(state: LeaseState, index: u64) -> Self {
        Replica {
            twin: state.clone(),
            state,
            index,
        }
    }

    /// Applies one entry at the next index (after `gap` blank/membership
    /// entries) to both replicas and checks the result.
    pub fn apply(&mut self, gap: u64, command: Option<&Command>) {
        // No log holds an entry past index u64::MAX (a decoded snapshot may
        // claim to be that far): nothing can follow.
        if self.index.checked_add(gap.saturating_add(1)).is_none() {
            return;
        }
        for _ in 0..gap {
            self.index += 1;
            let a = self.state.apply_noop(self.index);
            let b = self.twin.apply_noop(self.index);
            assert_eq!(a, b, "noop answers differ");
        }
        let Some(command) = command else {
            return;
        };
        self.index += 1;
        let before_position = self.state.position();
        let before_revision = self.state.revision();
        let applied = self.state.apply(self.index, command);
        let twin = self.twin.apply(self.index, command);
        assert_eq!(applied, twin, "replicas answer {command:?} differently");
        assert_eq!(applied.index, self.index);
        if let Err(broken) = self.state.check_invariants() {
            panic!("invariant broken after {command:?}: {broken}");
        }
        for e in &applied.events {
            assert_eq!(e.revision, self.index, "event revision of {command:?}");
        }
        assert!(
            self.state.position() >= before_position,
            "position went back"
        );
        if applied.touched.is_empty() {
            assert_eq!(self.state.position(), before_position);
            assert_eq!(self.state.revision(), before_revision);
        } else {
            assert_eq!(self.state.revision(), self.index, "revision of {command:?}");
            assert!(self.state.position() >= self.index);
        }
    }

    /// Checks that both replicas encode identically and that the encoding
    /// decodes to the same state and encodes to the same bytes again.
    pub fn check_encoding(&self) {
        let bytes = self.state.encode();
        assert_eq!(bytes, self.twin.encode(), "replicas encode differently");
        let back = match LeaseState::decode(&bytes) {
            Ok(back) => back,
            Err(e) => panic!("an applied state does not decode: {e}"),
        };
        assert_eq!(back, self.state, "state changed through encode/decode");
        assert_eq!(back.encode(), bytes, "re-encoding differs");
    }
}

/// Applies a log generated from `u` to `replica`, checking every entry,
/// then the encodings.
pub fn run_log(u: &mut Unstructured<'_>, replica: &mut Replica) {
    for _ in 0..ENTRIES_MAX {
        if u.is_empty() {
            break;
        }
        let Ok(gap) = u.int_in_range(0..=2u64) else {
            break;
        };
        let Ok(command) = (CommandGen { u: &mut *u }).entry(&replica.state) else {
            break;
        };
        replica.apply(gap, Some(&command));
    }
    replica.check_encoding();
}

/// The request-validation target's fixtures.
pub mod requests {
    use leasehold_core::{
        Acquire, Command, LeaseConfig, LeaseState, Mode, SessionRef, SessionSecret, SessionTarget,
    };

    /// Request types the target decodes (the first input byte, modulo this).
    pub const REQUEST_KINDS: u8 = 12;
    /// Secret of session 1 (findable by the fuzzer: all zeros).
    pub const SECRET_1: SessionSecret = SessionSecret([0; 16]);
    /// Secret of session 2.
    pub const SECRET_2: SessionSecret = SessionSecret([1; 16]);

    /// The applied state the checks run against: session 1 holds `a`
    /// exclusively, session 2 waits for it; both have all-zero / all-one
    /// secrets so that inputs can name them.
    pub fn state() -> LeaseState {
        let mut state = LeaseState::new(LeaseConfig::default());
        let open = |secret| Command::OpenSession {
            client_name: "fuzz".into(),
            ttl_ms: 10_000,
            secret,
            request_id: 0,
        };
        let acquire = |id, secret, wait| {
            Command::Acquire(Acquire {
                session: SessionTarget::Existing(SessionRef { id, secret }),
                resource: "a".into(),
                mode: Mode::Exclusive,
                wait,
                metadata: Vec::new(),
            })
        };
        state.apply(1, &open(SECRET_1));
        state.apply(2, &open(SECRET_2));
        state.apply(3, &acquire(1, SECRET_1, false));
        state.apply(4, &acquire(2, SECRET_2, true));
        state
    }
}
