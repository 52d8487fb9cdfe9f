//! A `recover` worker's records of its clients, and the two reports built
//! from them: how the clients came back (`rejoined`) and the check of every
//! client against its room's final `seq` (`verified`).

use super::Storm;
use crate::histogram::Micros;
use crate::ipc::{self, Rejoined, Verified};
use crate::recovery::{Rejoin, Tracker};

/// Where a client is.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) enum State {
    /// Not open (yet, or ever).
    #[default]
    Opening,
    /// Joined the first time.
    Open,
    /// Joined again after the drop.
    Rejoined(Rejoin),
    /// Found no way back before the deadline.
    NotRejoined,
    /// Its connection failed or was closed by the server after it had opened.
    Ended,
}

/// One client's record.
#[derive(Default)]
pub(super) struct Client {
    pub(super) tracker: Option<Tracker>,
    /// The `epoch` of the first `joined`.
    pub(super) epoch: Option<String>,
    pub(super) state: State,
    /// The rejoin's `since` and the `seq` its `joined` named.
    pub(super) since: u64,
    pub(super) target: u64,
    /// When the drop was (µs since the epoch).
    pub(super) dropped_us: u64,
    /// Messages up to `target` received after the rejoin: the replay.
    pub(super) replayed: u64,
    /// From the drop until every message up to `target` was in, µs.
    pub(super) caught_up_us: Option<u64>,
}

/// How the clients came back, as they come back.
#[derive(Default)]
pub(super) struct Rejoins {
    pub(super) recovered: u64,
    pub(super) unrecovered: u64,
    pub(super) unrecovered_samples: Vec<String>,
    pub(super) not_rejoined: u64,
    pub(super) not_rejoined_samples: Vec<String>,
    pub(super) retries: u64,
    pub(super) retry_samples: Vec<String>,
    pub(super) epoch_changed: u64,
    pub(super) recover: Micros,
    pub(super) reconnect: Micros,
    pub(super) last_recovered_us: Option<u64>,
    pub(super) last_joined_us: Option<u64>,
}

impl Storm {
    /// How the clients came back, with the trouble seen since the last report.
    pub(super) fn rejoined(&self, dropped: u64) -> Rejoined {
        let r = self.rejoins.borrow();
        Rejoined {
            dropped,
            recovered: r.recovered,
            unrecovered: r.unrecovered,
            unrecovered_samples: r.unrecovered_samples.clone(),
            // Clients still on their way at the report count as not rejoined too.
            not_rejoined: dropped.saturating_sub(r.recovered + r.unrecovered),
            not_rejoined_samples: r.not_rejoined_samples.clone(),
            retries: r.retries,
            retry_samples: r.retry_samples.clone(),
            epoch_changed: r.epoch_changed,
            recover_us: r.recover.to_pairs(),
            reconnect_us: r.reconnect.to_pairs(),
            last_recovered_us: r.last_recovered_us,
            last_joined_us: r.last_joined_us,
            trouble: std::mem::take(&mut *self.trouble.borrow_mut()),
        }
    }

    /// Checks every client that rejoined against its room's final `seq`.
    /// Waits until every rejoined client has its room's final `seq`, or
    /// [`CATCH_UP_LIMIT`] passed: a server short of CPU (the machine is
    /// shared with this generator) may still be delivering after the
    /// drain, and what arrives late is not missing.
    pub(super) async fn until_caught_up(&self, final_seqs: &[u64]) {
        let deadline = tokio::time::Instant::now() + CATCH_UP_LIMIT;
        while tokio::time::Instant::now() < deadline {
            let behind = self.clients.borrow().iter().enumerate().any(|(local, c)| {
                let room = self.plan.room_of(self.first + local);
                matches!((&c.tracker, c.state, final_seqs.get(room)),
                    (Some(tracker), State::Rejoined(_), Some(&final_seq)) if tracker.last() < final_seq)
            });
            if !behind {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    pub(super) fn verify(&self, final_seqs: &[u64]) -> Verified {
        let clients = self.clients.borrow();
        let mut v = Verified::default();
        let mut caught_up = Micros::new();
        for (local, c) in clients.iter().enumerate() {
            let index = self.first + local;
            let room = self.plan.room_of(index);
            let (Some(tracker), State::Rejoined(rejoin), Some(&final_seq)) = (&c.tracker, c.state, final_seqs.get(room))
            else {
                if c.tracker.is_some() {
                    v.unchecked += 1;
                }
                continue;
            };
            let checked = tracker.check(final_seq, rejoin);
            let context = || {
                format!(
                    "first joined at seq {}, rejoined with since {} at seq {} ({}), room's final seq {final_seq}",
                    tracker.base(),
                    c.since,
                    c.target,
                    match rejoin {
                        Rejoin::Recovered => "recovered",
                        Rejoin::Unrecovered { .. } => "not recovered",
                    }
                )
            };
            if !checked.missing.is_empty() {
                let ranges: Vec<String> = checked
                    .missing
                    .iter()
                    .map(|&(a, b)| if a == b { a.to_string() } else { format!("{a}-{b}") })
                    .collect();
                ipc::push_sample(
                    &mut v.samples,
                    &format!("#{index} load-{room}: missing seq {}; {}", ranges.join(", "), context()),
                );
            }
            if !checked.repeated.is_empty() {
                ipc::push_sample(
                    &mut v.samples,
                    &format!("#{index} load-{room}: seq {:?} more than once; {}", checked.repeated, context()),
                );
            }
            v.tally.add(&checked.tally);
            v.replayed += c.replayed;
            if let Some(us) = c.caught_up_us {
                caught_up.record(us);
            }
        }
        v.caught_up_us = caught_up.to_pairs();
        v.trouble = std::mem::take(&mut *self.trouble.borrow_mut());
        v
    }
}

/// The longest [`Storm::until_caught_up`] waits past the drain.
const CATCH_UP_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);
