//! [`Directory`]: cluster-wide presence (who is in which room and who is
//! online, on which node) and node liveness, behind one trait with two
//! implementations held to one conformance suite (`tests/it/directory.rs`):
//!
//! - [`MemoryDirectory`]: nodes in one process sharing one directory.
//! - [`RedisDirectory`]: Redis sets, changed by Lua scripts (`lua/`) so every change
//!   is atomic, through the [`Backplane`] (so in order with the relay's
//!   publishes).
//!
//! Every entry names the node that holds it. A node proves it is alive by
//! [`Directory::heartbeat`] at least every `ttl`; entries of a node whose
//! heartbeat lapsed are left out of every answer at once, and removed for
//! good by the first node that [`Directory::sweep`]s it.
//!
//! In Redis (`n` a node, `r` a room, `u` a user, `\0` a zero byte):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `herald:nodes` | set | every registered node |
//! | `herald:alive:{n}` | string, expires after the ttl | n's heartbeat |
//! | `herald:members:{r}` | set | `n\0u` for each node with user u in r |
//! | `herald:online:{u}` | set | the nodes where u has a connection |
//! | `herald:node:{n}:rooms` | set | `r\0u` for each entry n holds in a room |
//! | `herald:node:{n}:users` | set | the users n has online |

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fred::types::Value;
use futures_util::TryFutureExt;
use parking_lot::Mutex;

use super::backplane::Backplane;
use super::script::{self, Script};
use super::relay::{Pending, RelayError};
use crate::ids::{NodeId, RoomName, UserId};

/// The live nodes, and the registered ones whose heartbeat lapsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Nodes {
    pub alive: BTreeSet<NodeId>,
    pub dead: BTreeSet<NodeId>,
}

/// What [`Directory::replace_room`] changed: users the node had in the
/// room before and not now, and the other way round.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    pub removed: Vec<UserId>,
    pub added: Vec<UserId>,
}

/// Cluster-wide presence and node liveness. Like the relay, calls take
/// effect in the order they are made.
pub trait Directory: Send + Sync + 'static {
    /// Marks `node` alive for `ttl`. True when it was not registered: new,
    /// or swept as dead meanwhile (it must then write its entries again,
    /// [`Self::replace_room`] and [`Self::replace_users`]).
    fn heartbeat(&self, node: &NodeId, ttl: Duration) -> Pending<bool>;
    /// The registered nodes, alive or dead.
    fn nodes(&self) -> Pending<Nodes>;
    /// Removes `node` and all its entries if its heartbeat has lapsed; true
    /// when this call did it (another node may have been first).
    fn sweep(&self, node: &NodeId) -> Pending<bool>;
    /// Removes `node` and all its entries now (a node leaving on purpose).
    fn depart(&self, node: &NodeId) -> Pending<()>;
    /// `node` has `user` in `room`.
    fn room_joined(&self, node: &NodeId, room: &RoomName, user: &UserId) -> Pending<()>;
    /// `node` no longer has `user` in `room`.
    fn room_left(&self, node: &NodeId, room: &RoomName, user: &UserId) -> Pending<()>;
    /// `node` has a connection of `user`.
    fn user_online(&self, node: &NodeId, user: &UserId) -> Pending<()>;
    /// `node` no longer has a connection of `user`.
    fn user_offline(&self, node: &NodeId, user: &UserId) -> Pending<()>;
    /// `(node, user)` for every live node's user in `room`.
    fn room_members(&self, room: &RoomName) -> Pending<Vec<(NodeId, UserId)>>;
    /// How many distinct users `room` has on live nodes.
    fn room_count(&self, room: &RoomName) -> Pending<usize>;
    /// Whether each of `users` has a connection on a live node.
    fn online(&self, users: Vec<UserId>) -> Pending<Vec<bool>>;
    /// Makes `node`'s users in `room` exactly `users`, whatever they were
    /// (after an outage, or after being swept).
    fn replace_room(&self, node: &NodeId, room: &RoomName, users: Vec<UserId>) -> Pending<Changes>;
    /// Drops `node`'s entries in every room but `rooms`; returns the
    /// `(room, user)` entries dropped.
    fn retain_rooms(&self, node: &NodeId, rooms: Vec<RoomName>) -> Pending<Vec<(RoomName, UserId)>>;
    /// Makes `node`'s online users exactly `users`.
    fn replace_users(&self, node: &NodeId, users: Vec<UserId>) -> Pending<()>;
    /// Keeps the record of Socket.IO session `pid` for `ttl` (replacing
    /// one kept before).
    fn keep_session(&self, pid: u64, record: String, ttl: Duration) -> Pending<()>;
    /// Takes the record kept for Socket.IO session `pid`: only one taker
    /// gets it.
    fn take_session(&self, pid: u64) -> Pending<Option<String>>;
    /// Whether the directory can be reached now.
    fn is_connected(&self) -> bool;
}

/// The users of `members`, each once, sorted.
pub(crate) fn users_of(members: &[(NodeId, UserId)]) -> Vec<UserId> {
    let users: BTreeSet<&UserId> = members.iter().map(|(_, user)| user).collect();
    users.into_iter().cloned().collect()
}

fn ready<T: Send + 'static>(value: T) -> Pending<T> {
    Box::pin(std::future::ready(Ok(value)))
}

/// A directory nodes share in one process.
#[derive(Default)]
pub struct MemoryDirectory {
    state: Mutex<MemoryState>,
}

#[derive(Default)]
struct MemoryState {
    /// Registered nodes and when their heartbeat lapses.
    nodes: HashMap<NodeId, Instant>,
    /// Per node: room entries and online users.
    rooms: HashMap<NodeId, BTreeSet<(RoomName, UserId)>>,
    users: HashMap<NodeId, BTreeSet<UserId>>,
    /// Socket.IO session records, and when each lapses.
    sessions: HashMap<u64, (Instant, String)>,
}

impl MemoryState {
    fn is_alive(&self, node: &str, now: Instant) -> bool {
        self.nodes.get(node).is_some_and(|&until| until > now)
    }

    fn forget(&mut self, node: &str) {
        self.nodes.remove(node);
        self.rooms.remove(node);
        self.users.remove(node);
    }
}

impl Directory for MemoryDirectory {
    fn heartbeat(&self, node: &NodeId, ttl: Duration) -> Pending<bool> {
        let new = self.state.lock().nodes.insert(node.clone(), Instant::now() + ttl).is_none();
        ready(new)
    }

    fn nodes(&self) -> Pending<Nodes> {
        let state = self.state.lock();
        let now = Instant::now();
        let mut nodes = Nodes::default();
        for (node, &until) in &state.nodes {
            let set = if until > now { &mut nodes.alive } else { &mut nodes.dead };
            set.insert(node.clone());
        }
        ready(nodes)
    }

    fn sweep(&self, node: &NodeId) -> Pending<bool> {
        let mut state = self.state.lock();
        let lapsed = state.nodes.get(node).is_some_and(|&until| until <= Instant::now());
        if lapsed {
            state.forget(node);
        }
        ready(lapsed)
    }

    fn depart(&self, node: &NodeId) -> Pending<()> {
        self.state.lock().forget(node);
        ready(())
    }

    fn room_joined(&self, node: &NodeId, room: &RoomName, user: &UserId) -> Pending<()> {
        let mut state = self.state.lock();
        state.rooms.entry(node.clone()).or_default().insert((room.clone(), user.clone()));
        ready(())
    }

    fn room_left(&self, node: &NodeId, room: &RoomName, user: &UserId) -> Pending<()> {
        if let Some(rooms) = self.state.lock().rooms.get_mut(node) {
            rooms.remove(&(room.clone(), user.clone()));
        }
        ready(())
    }

    fn user_online(&self, node: &NodeId, user: &UserId) -> Pending<()> {
        self.state.lock().users.entry(node.clone()).or_default().insert(user.clone());
        ready(())
    }

    fn user_offline(&self, node: &NodeId, user: &UserId) -> Pending<()> {
        if let Some(users) = self.state.lock().users.get_mut(node) {
            users.remove(user);
        }
        ready(())
    }

    fn room_members(&self, room: &RoomName) -> Pending<Vec<(NodeId, UserId)>> {
        let state = self.state.lock();
        let now = Instant::now();
        let mut members = Vec::new();
        for (node, entries) in &state.rooms {
            if state.is_alive(node, now) {
                members.extend(entries.iter().filter(|(r, _)| r == room).map(|(_, u)| (node.clone(), u.clone())));
            }
        }
        members.sort();
        ready(members)
    }

    fn room_count(&self, room: &RoomName) -> Pending<usize> {
        let state = self.state.lock();
        let now = Instant::now();
        let users: BTreeSet<&UserId> = state
            .rooms
            .iter()
            .filter(|(node, _)| state.is_alive(node, now))
            .flat_map(|(_, entries)| entries.iter().filter(|(r, _)| r == room).map(|(_, u)| u))
            .collect();
        ready(users.len())
    }

    fn online(&self, users: Vec<UserId>) -> Pending<Vec<bool>> {
        let state = self.state.lock();
        let now = Instant::now();
        let online = users
            .iter()
            .map(|user| state.users.iter().any(|(node, set)| set.contains(user) && state.is_alive(node, now)))
            .collect();
        ready(online)
    }

    fn replace_room(&self, node: &NodeId, room: &RoomName, users: Vec<UserId>) -> Pending<Changes> {
        let mut state = self.state.lock();
        let entries = state.rooms.entry(node.clone()).or_default();
        let old: BTreeSet<UserId> = entries.iter().filter(|(r, _)| r == room).map(|(_, u)| u.clone()).collect();
        let new: BTreeSet<UserId> = users.into_iter().collect();
        entries.retain(|(r, _)| r != room);
        entries.extend(new.iter().map(|u| (room.clone(), u.clone())));
        let changes = Changes {
            removed: old.difference(&new).cloned().collect(),
            added: new.difference(&old).cloned().collect(),
        };
        ready(changes)
    }

    fn retain_rooms(&self, node: &NodeId, rooms: Vec<RoomName>) -> Pending<Vec<(RoomName, UserId)>> {
        let keep: BTreeSet<RoomName> = rooms.into_iter().collect();
        let mut state = self.state.lock();
        let entries = state.rooms.entry(node.clone()).or_default();
        let dropped: Vec<_> = entries.iter().filter(|(r, _)| !keep.contains(r)).cloned().collect();
        entries.retain(|(r, _)| keep.contains(r));
        ready(dropped)
    }

    fn keep_session(&self, pid: u64, record: String, ttl: Duration) -> Pending<()> {
        let mut state = self.state.lock();
        let now = Instant::now();
        state.sessions.retain(|_, (until, _)| *until > now);
        state.sessions.insert(pid, (now + ttl, record));
        ready(())
    }

    fn take_session(&self, pid: u64) -> Pending<Option<String>> {
        let taken = self.state.lock().sessions.remove(&pid).filter(|(until, _)| *until > Instant::now());
        ready(taken.map(|(_, record)| record))
    }

    fn replace_users(&self, node: &NodeId, users: Vec<UserId>) -> Pending<()> {
        self.state.lock().users.insert(node.clone(), users.into_iter().collect());
        ready(())
    }

    fn is_connected(&self) -> bool {
        true
    }
}

/// A directory in Redis.
pub struct RedisDirectory {
    backplane: Arc<Backplane>,
}

impl RedisDirectory {
    pub fn new(backplane: Arc<Backplane>) -> Self {
        Self { backplane }
    }

    fn eval<T: Send + 'static>(
        &self,
        script: &'static Script,
        args: Vec<Value>,
        read: impl FnOnce(Value) -> Result<T, fred::error::Error> + Send + 'static,
    ) -> Pending<T> {
        let call = self.backplane.eval(script, Vec::new(), args);
        Box::pin(async move { Ok(read(call.await?)?) }.map_err(RelayError::from_backplane))
    }
}

fn text(s: &str) -> Value {
    Value::String(s.to_owned().into())
}

fn flag(on: bool) -> Value {
    text(if on { "1" } else { "0" })
}

fn strings<T: From<String>>(value: Value) -> Result<Vec<T>, fred::error::Error> {
    match value {
        Value::Null => Ok(Vec::new()),
        value => Ok(value.convert::<Vec<String>>()?.into_iter().map(T::from).collect()),
    }
}

/// `[a, b, c, d]` as `[(a, b), (c, d)]`.
fn pairs<A: From<String>, B: From<String>>(flat: Vec<String>) -> Vec<(A, B)> {
    let mut flat = flat.into_iter();
    std::iter::from_fn(|| Some((flat.next()?.into(), flat.next()?.into()))).collect()
}

/// `r\0u` entries as `(r, u)`.
fn split(entries: Vec<String>) -> Vec<(RoomName, UserId)> {
    entries.into_iter().filter_map(|e| e.split_once('\0').map(|(r, u)| (r.into(), u.into()))).collect()
}

impl Directory for RedisDirectory {
    fn heartbeat(&self, node: &NodeId, ttl: Duration) -> Pending<bool> {
        let args = vec![text(node), Value::Integer(ttl.as_millis() as i64)];
        self.eval(&script::HEARTBEAT, args, |v| v.convert::<i64>().map(|added| added == 1))
    }

    fn nodes(&self) -> Pending<Nodes> {
        self.eval(&script::NODES, Vec::new(), |v| {
            let mut nodes = Nodes::default();
            for (node, alive) in pairs::<NodeId, String>(strings(v)?) {
                let set = if alive == "1" { &mut nodes.alive } else { &mut nodes.dead };
                set.insert(node);
            }
            Ok(nodes)
        })
    }

    fn sweep(&self, node: &NodeId) -> Pending<bool> {
        self.eval(&script::FORGET, vec![text(node), text("lapsed")], |v| v.convert::<i64>().map(|swept| swept == 1))
    }

    fn depart(&self, node: &NodeId) -> Pending<()> {
        self.eval(&script::FORGET, vec![text(node), text("now")], |_| Ok(()))
    }

    fn room_joined(&self, node: &NodeId, room: &RoomName, user: &UserId) -> Pending<()> {
        self.eval(&script::ROOM, vec![text(node), text(room), text(user), flag(true)], |_| Ok(()))
    }

    fn room_left(&self, node: &NodeId, room: &RoomName, user: &UserId) -> Pending<()> {
        self.eval(&script::ROOM, vec![text(node), text(room), text(user), flag(false)], |_| Ok(()))
    }

    fn user_online(&self, node: &NodeId, user: &UserId) -> Pending<()> {
        self.eval(&script::USER, vec![text(node), text(user), flag(true)], |_| Ok(()))
    }

    fn user_offline(&self, node: &NodeId, user: &UserId) -> Pending<()> {
        self.eval(&script::USER, vec![text(node), text(user), flag(false)], |_| Ok(()))
    }

    fn room_members(&self, room: &RoomName) -> Pending<Vec<(NodeId, UserId)>> {
        self.eval(&script::MEMBERS, vec![text(room)], |v| {
            let mut members = pairs(strings(v)?);
            members.sort();
            Ok(members)
        })
    }

    fn room_count(&self, room: &RoomName) -> Pending<usize> {
        self.eval(&script::ROOM_COUNT, vec![text(room)], |v| Ok(v.convert::<i64>()?.max(0) as usize))
    }

    fn online(&self, users: Vec<UserId>) -> Pending<Vec<bool>> {
        if users.is_empty() {
            return ready(Vec::new());
        }
        let args = users.iter().map(|u| text(u)).collect();
        self.eval(&script::ONLINE, args, |v| Ok(v.convert::<Vec<i64>>()?.into_iter().map(|o| o == 1).collect()))
    }

    fn replace_room(&self, node: &NodeId, room: &RoomName, users: Vec<UserId>) -> Pending<Changes> {
        let mut args = vec![text(node), text(room)];
        args.extend(users.iter().map(|u| text(u)));
        self.eval(&script::REPLACE_ROOM, args, |v| {
            let mut halves: Vec<Value> = match v {
                Value::Array(halves) => halves,
                _ => Vec::new(),
            };
            let added = halves.pop().map(strings).transpose()?.unwrap_or_default();
            let removed = halves.pop().map(strings).transpose()?.unwrap_or_default();
            Ok(Changes { removed, added })
        })
    }

    fn retain_rooms(&self, node: &NodeId, rooms: Vec<RoomName>) -> Pending<Vec<(RoomName, UserId)>> {
        let mut args = vec![text(node)];
        args.extend(rooms.iter().map(|r| text(r)));
        self.eval(&script::RETAIN_ROOMS, args, |v| Ok(split(strings(v)?)))
    }

    fn keep_session(&self, pid: u64, record: String, ttl: Duration) -> Pending<()> {
        let ttl = (ttl.as_millis() as u64).max(1).to_string();
        self.eval(&script::SESSION_KEEP, vec![text(&pid.to_string()), text(&record), text(&ttl)], |_| Ok(()))
    }

    fn take_session(&self, pid: u64) -> Pending<Option<String>> {
        self.eval(&script::SESSION_TAKE, vec![text(&pid.to_string())], |v| match v {
            Value::Null => Ok(None),
            v => Ok(Some(v.convert::<String>()?)),
        })
    }

    fn replace_users(&self, node: &NodeId, users: Vec<UserId>) -> Pending<()> {
        let mut args = vec![text(node)];
        args.extend(users.iter().map(|u| text(u)));
        self.eval(&script::REPLACE_USERS, args, |_| Ok(()))
    }

    fn is_connected(&self) -> bool {
        self.backplane.is_connected()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_replies_pair_up_and_entries_split_at_the_zero_byte() {
        let flat = vec!["a".to_owned(), "alice".to_owned(), "b".to_owned(), "bob".to_owned()];
        let members: Vec<(NodeId, UserId)> = pairs(flat);
        assert_eq!(members, [("a".into(), "alice".into()), ("b".into(), "bob".into())]);
        assert_eq!(split(vec!["chat:1\0a b:c".into()]), [("chat:1".into(), "a b:c".into())]);
    }

    #[test]
    fn users_are_listed_once_and_sorted() {
        let members: Vec<(NodeId, UserId)> =
            vec![("a".into(), "bob".into()), ("b".into(), "alice".into()), ("c".into(), "bob".into())];
        assert_eq!(users_of(&members), ["alice", "bob"]);
    }
}
