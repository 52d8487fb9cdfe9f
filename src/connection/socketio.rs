//! What a node keeps of its Socket.IO sessions beyond their connections:
//! the long-polling sessions by Engine.IO `sid` (a poll finds its session
//! here, on whichever worker it arrives); the connected sessions by `pid`,
//! so that a client back before the node noticed its old connection is gone
//! (a network that dropped without a word) recovers from the live one; and,
//! for `socketio.recovery_ms` after a session's connection ends, where it
//! was in each of its rooms, by its `pid`, for its client to recover.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;

use super::clock;
use crate::delivery::polling::Link;
use crate::delivery::Outbox;
use crate::protocol::close;
use crate::ids::{RoomName, UserId};

/// A session's rooms as its connection ended: each with the epoch and the
/// `seq` its join placed it at.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Record {
    pub user: UserId,
    pub rooms: Vec<(RoomName, Arc<str>, u64)>,
}

impl Record {
    /// The record as Redis keeps it: the user, a line break, then each
    /// room with its epoch and `seq` as an SSE event id writes them.
    pub(crate) fn to_text(&self) -> String {
        let rooms = self.rooms.iter().map(|(room, epoch, seq)| (&**room, Some((&**epoch, *seq))));
        format!("{}\n{}", self.user, crate::protocol::framing::stream_id(rooms))
    }

    pub(crate) fn parse(text: &str) -> Option<Self> {
        let (user, rooms) = text.split_once('\n')?;
        let rooms = match rooms {
            "" => Vec::new(),
            rooms => crate::protocol::framing::parse_stream_id(rooms)?
                .into_iter()
                .map(|p| (p.room.as_str().into(), p.epoch.as_str().into(), p.seq))
                .collect(),
        };
        Some(Self { user: user.into(), rooms })
    }
}

#[derive(Default)]
pub(crate) struct Sessions {
    polling: Mutex<HashMap<Arc<str>, Arc<Link>>>,
    /// Connected sessions: their user, and the outbox whose positions are
    /// their record.
    live: Mutex<HashMap<u64, (UserId, Outbox)>>,
    records: Mutex<Records>,
}

/// Records by `pid`, and their expiry times in the order they were made
/// (the same as the order they expire in: every record lives equally long).
#[derive(Default)]
struct Records {
    by_pid: HashMap<u64, (u32, Record)>,
    expiring: VecDeque<(u32, u64)>,
}

impl Records {
    fn prune(&mut self, now: u32) {
        while let Some(&(at, pid)) = self.expiring.front() {
            if !clock::reached(now, at) {
                break;
            }
            self.expiring.pop_front();
            if self.by_pid.get(&pid).is_some_and(|(expires, _)| *expires == at) {
                self.by_pid.remove(&pid);
            }
        }
    }
}

impl Sessions {
    /// The polling session `sid`.
    pub(crate) fn link(&self, sid: &str) -> Option<Arc<Link>> {
        self.polling.lock().get(sid).cloned()
    }

    pub(crate) fn add_link(&self, link: Arc<Link>) {
        self.polling.lock().insert(link.sid.clone(), link);
    }

    pub(crate) fn remove_link(&self, sid: &str) {
        self.polling.lock().remove(sid);
    }

    /// Session `pid` of `user` is connected, writing through `outbox`.
    pub(crate) fn connected(&self, pid: u64, user: UserId, outbox: Outbox) {
        self.live.lock().insert(pid, (user, outbox));
    }

    /// Session `pid`'s connection through `outbox` ended (or gave the pid
    /// up): whether it was still the session's, not superseded by its
    /// client's reconnect. If it was, `record` is kept for `keep_ms`, in
    /// the same step, so that a reconnect finds it live or kept.
    pub(crate) fn end(&self, pid: u64, outbox: &Outbox, record: Option<Record>, keep_ms: u64) -> bool {
        let mut live = self.live.lock();
        if live.get(&pid).is_some_and(|(_, current)| !current.is(outbox)) {
            return false;
        }
        live.remove(&pid);
        if let Some(record) = record {
            self.keep(pid, record, keep_ms);
        }
        true
    }

    /// The record of session `pid` of `user` while it is still connected
    /// here (its client is back, on the connection writing through
    /// `outbox`, before this node noticed the old one was gone): the old
    /// connection is closed, and the session is the new one's from now on.
    pub(crate) fn take_live(&self, pid: u64, user: &UserId, outbox: &Outbox) -> Option<Record> {
        let (old_user, old) = {
            let mut live = self.live.lock();
            let entry = live.get_mut(&pid).filter(|(owner, _)| owner == user)?;
            std::mem::replace(entry, (user.clone(), outbox.clone()))
        };
        let rooms = old.joined_positions();
        old.close(close::NORMAL);
        Some(Record { user: old_user, rooms })
    }

    /// Keeps `record` for `pid` for `keep_ms`.
    pub(crate) fn keep(&self, pid: u64, record: Record, keep_ms: u64) {
        if keep_ms == 0 {
            return;
        }
        let now = clock::now();
        let expires = clock::deadline(now, keep_ms);
        let mut records = self.records.lock();
        records.prune(now);
        records.by_pid.insert(pid, (expires, record));
        records.expiring.push_back((expires, pid));
    }

    /// Takes the record kept for `pid`, if it has not expired.
    pub(crate) fn take(&self, pid: u64) -> Option<Record> {
        let mut records = self.records.lock();
        records.prune(clock::now());
        records.by_pid.remove(&pid).map(|(_, record)| record)
    }

    /// Records kept now.
    #[cfg(test)]
    fn kept(&self) -> usize {
        self.records.lock().by_pid.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(user: &str) -> Record {
        Record { user: user.into(), rooms: vec![("r".into(), "e".into(), 3)] }
    }

    #[test]
    fn a_record_is_taken_once() {
        let sessions = Sessions::default();
        sessions.keep(7, record("a"), 60_000);
        assert_eq!(sessions.take(7), Some(record("a")));
        assert_eq!(sessions.take(7), None);
        assert_eq!(sessions.take(8), None);
    }

    #[test]
    fn records_expire_and_are_pruned() {
        let sessions = Sessions::default();
        sessions.keep(1, record("a"), 1);
        std::thread::sleep(std::time::Duration::from_millis(5));
        sessions.keep(2, record("b"), 60_000);
        assert_eq!(sessions.kept(), 1, "the expired record went when the next was kept");
        assert_eq!(sessions.take(1), None);
        assert_eq!(sessions.take(2), Some(record("b")));
    }

    #[test]
    fn a_record_kept_again_lives_from_then() {
        let sessions = Sessions::default();
        sessions.keep(1, record("a"), 1);
        sessions.keep(1, record("b"), 60_000);
        std::thread::sleep(std::time::Duration::from_millis(5));
        sessions.keep(2, record("c"), 60_000);
        assert_eq!(sessions.take(1), Some(record("b")), "the first expiry does not remove the second record");
    }

    #[test]
    fn a_record_reads_back_from_its_text() {
        let two = Record { user: "a b".into(), rooms: vec![("r".into(), "e1".into(), 3), ("s".into(), "e1".into(), 0)] };
        assert_eq!(Record::parse(&two.to_text()), Some(two));
        let none = Record { user: "u".into(), rooms: Vec::new() };
        assert_eq!(Record::parse(&none.to_text()), Some(none));
        assert_eq!(Record::parse(""), None);
        assert_eq!(Record::parse("u\nnot a position"), None);
    }

    #[test]
    fn nothing_is_kept_without_a_window() {
        let sessions = Sessions::default();
        sessions.keep(1, record("a"), 0);
        assert_eq!(sessions.take(1), None);
    }
}
