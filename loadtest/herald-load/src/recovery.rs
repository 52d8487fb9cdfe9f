//! What one `recover` client saw of its room, and the check against what the
//! room was sent.
//!
//! A client's window starts at the `seq` its first `joined` named (`base`):
//! it must then receive every `seq` in `(base, final]` exactly once, over its
//! first connection, the replay after its rejoin and the live messages after
//! that, where `final` is the room's last `seq` once the publishers stopped.
//! Counts are kept per `seq`, so a duplicate is told apart from a gap however
//! the two connections' messages interleave.

use serde::{Deserialize, Serialize};

/// Most missing ranges kept per client for the report's samples.
const RANGES: usize = 3;

/// One client's messages, by `seq`.
#[derive(Debug, Clone)]
pub struct Tracker {
    base: u64,
    /// `counts[k]`: how many times `base + 1 + k` arrived (saturating).
    counts: Vec<u8>,
    /// The highest `seq` received (`base` before the first); what `since` is.
    last: u64,
    received: u64,
    out_of_order: u64,
    before_base: u64,
    /// `seq - n` of the first message: the publisher numbers each room's
    /// messages `n = 0, 1, ...` in the order it has them numbered, so every
    /// frame of the room, replayed or live, has the same difference.
    offset: Option<u64>,
    mismatches: u64,
}

/// How a client's rejoin went, as far as the check needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejoin {
    /// `recovered: true`: nothing may be missing.
    Recovered,
    /// `recovered: false` (or no answer): the messages in `(since, seq]` were
    /// not replayed and are expected to be missing.
    Unrecovered { since: u64, seq: u64 },
}

/// The check of one client (or, added up, of many).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    /// Clients checked.
    pub checked: u64,
    /// `seq`s every client should have received once: the sum of `final - base`.
    pub expected_messages: u64,
    /// Message frames received, duplicates included.
    pub received_messages: u64,
    /// `seq`s in the window never received (outside what an unrecovered rejoin lost).
    pub gaps: u64,
    /// Extra copies of `seq`s already received.
    pub duplicates: u64,
    /// `seq`s that arrived after a higher one (and were not duplicates).
    pub out_of_order: u64,
    /// Messages numbered past the room's final `seq`.
    pub beyond_final: u64,
    /// Messages numbered at or before the first `joined`'s `seq`.
    pub before_base: u64,
    /// Messages whose `data.n` does not match their `seq` like the room's other messages do.
    pub data_mismatches: u64,
    /// `seq`s an unrecovered rejoin did not replay (expected to be missing).
    pub missed_unrecovered: u64,
    pub clients_with_gaps: u64,
    pub clients_with_duplicates: u64,
}

impl Tally {
    pub fn add(&mut self, o: &Tally) {
        self.checked += o.checked;
        self.expected_messages += o.expected_messages;
        self.received_messages += o.received_messages;
        self.gaps += o.gaps;
        self.duplicates += o.duplicates;
        self.out_of_order += o.out_of_order;
        self.beyond_final += o.beyond_final;
        self.before_base += o.before_base;
        self.data_mismatches += o.data_mismatches;
        self.missed_unrecovered += o.missed_unrecovered;
        self.clients_with_gaps += o.clients_with_gaps;
        self.clients_with_duplicates += o.clients_with_duplicates;
    }

    /// Whether every message arrived exactly once, in order, as published.
    pub fn is_exact(&self) -> bool {
        self.gaps == 0
            && self.duplicates == 0
            && self.out_of_order == 0
            && self.beyond_final == 0
            && self.before_base == 0
            && self.data_mismatches == 0
    }
}

/// One client's check, with the first missing ranges for a sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub tally: Tally,
    /// Inclusive ranges of `seq`s counted as gaps.
    pub missing: Vec<(u64, u64)>,
    /// The first `seq`s that arrived more than once.
    pub repeated: Vec<u64>,
}

impl Tracker {
    /// A client whose first `joined` named `base` as the room's latest `seq`.
    pub fn new(base: u64) -> Self {
        Self {
            base,
            counts: Vec::new(),
            last: base,
            received: 0,
            out_of_order: 0,
            before_base: 0,
            offset: None,
            mismatches: 0,
        }
    }

    pub fn base(&self) -> u64 {
        self.base
    }

    /// The highest `seq` received so far: the `since` of a rejoin.
    pub fn last(&self) -> u64 {
        self.last
    }

    /// Counts a message frame numbered `seq` whose `data.n` is `n`.
    pub fn message(&mut self, seq: u64, n: Option<u64>) {
        self.received += 1;
        if let Some(n) = n {
            let offset = seq.wrapping_sub(n);
            match self.offset {
                None => self.offset = Some(offset),
                Some(o) if o != offset => self.mismatches += 1,
                Some(_) => {}
            }
        }
        if seq <= self.base {
            self.before_base += 1;
            return;
        }
        let k = (seq - self.base - 1) as usize;
        if k >= self.counts.len() {
            self.counts.resize(k + 1, 0);
        }
        let first = self.counts[k] == 0;
        self.counts[k] = self.counts[k].saturating_add(1);
        if first && seq < self.last {
            self.out_of_order += 1;
        }
        self.last = self.last.max(seq);
    }

    /// Checks the client against its room's `final_seq`, given how its rejoin went.
    pub fn check(&self, final_seq: u64, rejoin: Rejoin) -> Checked {
        let mut tally = Tally {
            checked: 1,
            expected_messages: final_seq.saturating_sub(self.base),
            received_messages: self.received,
            out_of_order: self.out_of_order,
            before_base: self.before_base,
            data_mismatches: self.mismatches,
            ..Tally::default()
        };
        let mut missing: Vec<(u64, u64)> = Vec::new();
        let mut repeated: Vec<u64> = Vec::new();
        let excused = match rejoin {
            Rejoin::Recovered => None,
            Rejoin::Unrecovered { since, seq } => Some((since, seq)),
        };
        for (k, &count) in self.counts.iter().enumerate() {
            let seq = self.base + 1 + k as u64;
            if seq > final_seq {
                tally.beyond_final += u64::from(count);
            } else if count > 1 {
                tally.duplicates += u64::from(count - 1);
                if repeated.len() < RANGES {
                    repeated.push(seq);
                }
            }
        }
        for seq in self.base + 1..=final_seq {
            let k = (seq - self.base - 1) as usize;
            if self.counts.get(k).copied().unwrap_or(0) > 0 {
                continue;
            }
            if excused.is_some_and(|(since, upto)| seq > since && seq <= upto) {
                tally.missed_unrecovered += 1;
                continue;
            }
            tally.gaps += 1;
            let kept = missing.len();
            match missing.last_mut() {
                Some((_, end)) if *end + 1 == seq => *end = seq,
                _ if kept < RANGES => missing.push((seq, seq)),
                _ => {}
            }
        }
        tally.clients_with_gaps = u64::from(tally.gaps > 0);
        tally.clients_with_duplicates = u64::from(tally.duplicates > 0);
        Checked { tally, missing, repeated }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(base: u64, seqs: &[u64]) -> Tracker {
        let mut t = Tracker::new(base);
        for &s in seqs {
            // The publisher's n for seq s in a room that started at 0.
            t.message(s, Some(s - 1));
        }
        t
    }

    #[test]
    fn every_seq_once_is_exact() {
        let t = seen(0, &[1, 2, 3, 4, 5]);
        let c = t.check(5, Rejoin::Recovered);
        assert!(c.tally.is_exact(), "{c:?}");
        assert_eq!(c.tally.expected_messages, 5);
        assert_eq!(c.tally.received_messages, 5);
        assert!(c.missing.is_empty());
        assert_eq!(t.last(), 5);
    }

    #[test]
    fn the_window_starts_after_the_first_joined() {
        let t = seen(10, &[11, 12, 13]);
        let c = t.check(13, Rejoin::Recovered);
        assert!(c.tally.is_exact(), "{c:?}");
        assert_eq!(c.tally.expected_messages, 3);
        let late = seen(10, &[10, 11]);
        assert_eq!(late.check(11, Rejoin::Recovered).tally.before_base, 1);
    }

    #[test]
    fn gaps_and_duplicates_across_the_seam_are_counted() {
        // Seen 1..=3 before the drop; the replay repeats 3 and skips 5.
        let t = seen(0, &[1, 2, 3, 3, 4, 6, 7, 8]);
        let c = t.check(9, Rejoin::Recovered);
        assert_eq!(c.tally.duplicates, 1);
        assert_eq!(c.tally.gaps, 2, "5 and 9");
        assert_eq!(c.missing, vec![(5, 5), (9, 9)]);
        assert_eq!(c.repeated, vec![3]);
        assert_eq!(c.tally.clients_with_gaps, 1);
        assert_eq!(c.tally.clients_with_duplicates, 1);
        assert!(!c.tally.is_exact());
    }

    #[test]
    fn an_unrecovered_rejoin_excuses_only_what_it_did_not_replay() {
        // Dropped at 3; rejoined when the room was at 6, recovered:false; live from 7.
        let t = seen(0, &[1, 2, 3, 7, 8]);
        let c = t.check(9, Rejoin::Unrecovered { since: 3, seq: 6 });
        assert_eq!(c.tally.missed_unrecovered, 3);
        assert_eq!(c.tally.gaps, 1, "9 was live and is missing");
        assert_eq!(c.missing, vec![(9, 9)]);
    }

    #[test]
    fn order_content_and_numbering_are_checked() {
        let mut t = Tracker::new(0);
        t.message(1, Some(0));
        t.message(3, Some(2));
        t.message(2, Some(1));
        t.message(4, Some(7));
        t.message(5, Some(4));
        t.message(6, Some(5));
        let c = t.check(4, Rejoin::Recovered);
        assert_eq!(c.tally.out_of_order, 1);
        assert_eq!(c.tally.data_mismatches, 1);
        assert_eq!(c.tally.beyond_final, 2);
        assert_eq!(c.tally.gaps, 0);
        assert_eq!(t.last(), 6);
    }

    #[test]
    fn missing_ranges_are_merged_and_few() {
        let t = seen(0, &[2, 6, 10]);
        let c = t.check(20, Rejoin::Recovered);
        assert_eq!(c.missing, vec![(1, 1), (3, 5), (7, 9)]);
        assert_eq!(c.tally.gaps, 17);
        let mut total = Tally::default();
        total.add(&c.tally);
        total.add(&c.tally);
        assert_eq!(total.gaps, 34);
        assert_eq!(total.clients_with_gaps, 2);
    }
}
