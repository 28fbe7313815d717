//! Applying a [`Command::Batch`]: its commands in order, each as if in an
//! entry of its own.

use super::LeaseState;
use crate::command::Command;
use crate::limits;
use crate::outcome::{Applied, Response, Touched};
use crate::rejection::Rejection;
use crate::types::LogIndex;

impl LeaseState {
    /// Applies the commands of one batch entry in order; each answer is the
    /// one it would get in an entry of its own (ids and tokens aside, which
    /// take consecutive positions).
    pub(super) fn apply_batch(&mut self, index: LogIndex, commands: &[Command]) -> Applied {
        let refuse = |r: Rejection| Applied::rejected(index, r);
        if commands.is_empty() {
            return refuse(Rejection::invalid("batch", "must not be empty"));
        }
        if commands.len() > limits::BATCH_COMMANDS_MAX {
            return refuse(Rejection::LimitExceeded {
                what: "commands in one batch".into(),
                limit: limits::BATCH_COMMANDS_MAX as u64,
            });
        }
        if commands.iter().any(|c| matches!(c, Command::Batch(_))) {
            return refuse(Rejection::invalid("batch", "must not contain a batch"));
        }
        let mut all = Applied {
            index,
            response: Response::Noop,
            events: Vec::new(),
            touched: Touched::default(),
            sessions: Vec::new(),
        };
        let mut responses = Vec::with_capacity(commands.len());
        for command in commands {
            let one = self.apply_one(index, command);
            all.events.extend(one.events);
            all.touched.merge(one.touched);
            all.sessions.extend(one.sessions);
            responses.push(one.response);
        }
        all.response = Response::Batch(responses);
        all
    }
}
