//! A room's side in a cluster: its channel, the other nodes' members,
//! and publishes numbered by the backplane.

use super::*;

/// How long a join waits for its room to catch up with what its client
/// saw on another node.
const CATCH_UP: std::time::Duration = std::time::Duration::from_secs(1);

/// What a sync learnt.
pub(crate) struct SyncOutcome {
    /// How this node's own entries changed (a rewrite after an outage).
    changes: Changes,
    /// Every user in the room on a live node, with that node.
    members: Vec<(NodeId, UserId)>,
    /// The room's epoch and latest `seq` in Redis.
    recorded: Recorded,
}

/// Who is waiting for the number of a publish sent to the backplane.
pub(super) enum Publisher {
    Member { conn: ConnId, id: Option<Box<RawValue>>, echo: bool },
    Server { reply: RpcReplyPort<u64> },
}

/// A publish on its way through the backplane.
struct Waiting {
    publisher: Publisher,
    from: UserId,
    data: Box<RawValue>,
    /// The member's `ack` went out already (its message came back first).
    acked: bool,
    /// When the publish reached the server.
    at: Instant,
}

/// A member set aside while its join waits on the backplane (its directory
/// write, the room's history): what the room sends meanwhile is held for it,
/// and goes out after its `joined` and replay.
pub(super) struct Joining {
    pub user: UserId,
    pub outbox: Outbox,
    pub id: Option<Box<RawValue>>,
    pub since: Option<Box<Since>>,
    /// The room's latest `seq` here when the join arrived: what was
    /// delivered up to it comes from history, what came after is held.
    pub latest: u64,
    pub reply: RpcReplyPort<Result<JoinReply, RoomsFull>>,
    /// It was a member already (a join again, with `since`).
    pub was_member: bool,
    /// Names this join among the connection's: what [`RoomMsg::Admitted`]
    /// answers.
    pub ticket: u64,
    pub held: Vec<Encoded>,
    /// The bytes of `held`.
    pub held_bytes: usize,
    /// More was held than the connection's queue could take (in a room
    /// whose slow members are disconnected).
    pub overflowed: bool,
    /// In a `latest` room: the newest message that did not fit in `held`.
    pub newest: Option<Encoded>,
    /// Messages for this connection that arrived meanwhile (a second join),
    /// handled once it is in.
    pub then: Vec<RoomMsg>,
    /// What the history read found, while the join waits for the room to
    /// catch up here with what the client saw elsewhere.
    pub recorded: Option<Recorded>,
}

/// A room's part in a cluster.
struct Clustered {
    cluster: Arc<Membership>,
    /// Users other nodes have in the room, with those nodes.
    remote: BTreeMap<UserId, Vec<NodeId>>,
    /// Between asking for the other nodes' members and having them:
    /// membership changes wait in `deferred`, so they apply on top.
    syncing: bool,
    /// The latest sync; answers to older ones are ignored.
    generation: u64,
    /// Subscribed to the room's channel (the last sync went through): only
    /// then do publishes go through the backplane.
    subscribed: bool,
    deferred: VecDeque<RoomMsg>,
    /// Publishes waiting for their number, by token.
    waiting: HashMap<u64, Waiting>,
    /// Publishes numbered before their message came back: `(seq, when it
    /// reached the server)`, for the latency of their delivery here.
    unechoed: VecDeque<(u64, Instant)>,
    /// Members whose join waits on the backplane.
    joining: HashMap<ConnId, Joining>,
    /// The room's epoch as Redis holds it, once read.
    epoch: Option<Arc<str>>,
    /// The room numbered a message on its own since it last synced.
    diverged: bool,
    /// Members let in ahead of the room (their client saw messages this
    /// node had not received yet), with the `seq` they have up to: those
    /// messages are not sent to them when they arrive.
    ahead: HashMap<ConnId, u64>,
}

/// Whether a syncing room keeps `msg` for after the sync: everything that
/// changes or reads membership. Messages from the channel are delivered at
/// once (their order is the channel's), and so are the sync's own answers.
fn defers(msg: &RoomMsg) -> bool {
    match msg {
        RoomMsg::Relayed { body, .. } => !matches!(body, Body::Message { .. }),
        RoomMsg::Synced { .. } | RoomMsg::Numbered { .. } | RoomMsg::Sync { .. } | RoomMsg::Crash => false,
        _ => true,
    }
}

/// A room's side in a cluster, or nothing on a single node. The room's own
/// code asks it through the methods below; only this module looks inside.
pub(super) struct Side(Option<Box<Clustered>>);

impl Side {
    pub(super) fn new(cluster: Option<Arc<Membership>>) -> Self {
        Self(cluster.map(|cluster| Box::new(Clustered::new(cluster))))
    }

    /// Keeps `msg` for after the sync under way, if any and if it waits
    /// (see [`defers`]); gives it back to be handled now otherwise.
    pub(super) fn defer(&mut self, msg: RoomMsg) -> Option<RoomMsg> {
        match self.0.as_mut() {
            Some(clustered) if clustered.syncing && defers(&msg) => {
                clustered.deferred.push_back(msg);
                None
            }
            _ => Some(msg),
        }
    }

    /// The next message a finished sync held back.
    pub(super) fn next_deferred(&mut self) -> Option<RoomMsg> {
        self.0.as_mut().and_then(|c| c.deferred.pop_front())
    }

    /// Neither syncing nor waiting for anything: the room may retire.
    pub(super) fn is_settled(&self) -> bool {
        self.0.as_ref().is_none_or(|c| c.is_settled())
    }

    /// The users other nodes have in the room.
    pub(super) fn remote_users(&self) -> impl Iterator<Item = &UserId> {
        self.0.iter().flat_map(|c| c.remote.keys())
    }

    /// Whether another node has `user` in the room.
    pub(super) fn has_remote(&self, user: &str) -> bool {
        self.0.as_ref().is_some_and(|c| c.remote.contains_key(user))
    }

    /// Tells the other nodes that `user` is (or stopped) typing in `room`.
    pub(super) fn typing(&self, room: &RoomName, user: UserId, typing: bool) {
        if let Some(clustered) = &self.0 {
            let body = Body::Typing { room: room.clone(), user, typing };
            clustered.cluster.publish(&Channel::Room(room.clone()), body);
        }
    }

    /// Writes `user`'s arrival in `room` to the directory; the write, to
    /// wait for before the join is answered.
    pub(super) fn user_joined(&self, room: &RoomName, user: &UserId) -> Option<Pending<()>> {
        self.0.as_ref().map(|c| c.cluster.room_joined(room, user))
    }

    /// Writes `user`'s departure from `room` to the directory.
    pub(super) fn user_left(&self, room: &RoomName, user: &UserId) {
        if let Some(clustered) = &self.0 {
            clustered.cluster.room_left(room, user);
        }
    }

    pub(super) fn is_clustered(&self) -> bool {
        self.0.is_some()
    }

    /// Whether `frame` is a message some members have already (they came
    /// in ahead of the room): then which.
    pub(super) fn seen_by(&self, frame: &Encoded) -> Option<impl Fn(ConnId) -> bool + '_> {
        let clustered = self.0.as_ref()?;
        if clustered.ahead.is_empty() {
            return None;
        }
        let seq = frame.message_seq()?;
        Some(move |conn| clustered.ahead.get(&conn).is_some_and(|&upto| seq <= upto))
    }

    /// Forgets the members the room has caught up with, as of `latest`.
    fn forget_ahead(&mut self, latest: u64) {
        if let Some(clustered) = self.0.as_mut() {
            if !clustered.ahead.is_empty() {
                clustered.ahead.retain(|_, upto| *upto > latest);
            }
        }
    }

    /// `conn` left the room.
    pub(super) fn left(&mut self, conn: ConnId) {
        if let Some(clustered) = self.0.as_mut() {
            clustered.ahead.remove(&conn);
        }
    }

    /// The room numbered a message itself, the cluster being away.
    pub(super) fn numbered_alone(&mut self) {
        if let Some(clustered) = self.0.as_mut() {
            clustered.diverged = true;
        }
    }

    /// The room's epoch as Redis holds it, once read.
    pub(super) fn epoch(&self) -> Option<Arc<str>> {
        self.0.as_ref().and_then(|c| c.epoch.clone())
    }

    /// Whether `conn`'s join waits on the backplane.
    pub(super) fn is_joining(&self, conn: ConnId) -> bool {
        self.0.as_ref().is_some_and(|c| !c.joining.is_empty() && c.joining.contains_key(&conn))
    }

    /// Keeps `msg` for when `conn`'s join is done.
    pub(super) fn queue_behind(&mut self, conn: ConnId, msg: RoomMsg) {
        if let Some(joining) = self.0.as_mut().and_then(|c| c.joining.get_mut(&conn)) {
            joining.then.push(msg);
        }
    }

    /// Drops `conn`'s join, if it waits: the user it was for, and its outbox.
    pub(super) fn forget_joining(&mut self, conn: ConnId) -> Option<(UserId, Outbox)> {
        let joining = self.0.as_mut()?.joining.remove(&conn)?;
        Some((joining.user, joining.outbox))
    }

    /// Holds `frame` for every joining member but `except`, up to what its
    /// connection's queue could take; past that, as the room's `policy` says.
    pub(super) fn hold(&mut self, frame: &Encoded, except: Option<ConnId>, policy: SlowConsumer, metrics: &Metrics) {
        let Some(clustered) = self.0.as_mut() else { return };
        if clustered.joining.is_empty() {
            return;
        }
        for (conn, joining) in &mut clustered.joining {
            if Some(*conn) != except {
                joining.hold(frame, policy, metrics);
            }
        }
    }

    /// Holds `frame`, a reply, for the joining member `conn`.
    pub(super) fn hold_for(&mut self, conn: ConnId, frame: &Encoded, metrics: &Metrics) {
        if let Some(joining) = self.0.as_mut().and_then(|c| c.joining.get_mut(&conn)) {
            joining.hold(frame, SlowConsumer::Disconnect, metrics);
        }
    }
}

impl Joining {
    fn hold(&mut self, frame: &Encoded, policy: SlowConsumer, metrics: &Metrics) {
        if self.overflowed || !self.outbox.carries(frame.kind) {
            return;
        }
        let bounds = self.outbox.bounds();
        let bytes = self.held_bytes + frame.text().len();
        if self.held.len() >= bounds.frames as usize || bytes > bounds.bytes as usize {
            match policy {
                SlowConsumer::Disconnect => {
                    self.overflowed = true;
                    self.held = Vec::new();
                    self.held_bytes = 0;
                }
                SlowConsumer::Latest if frame.kind == ServerKind::Message => {
                    if self.newest.replace(frame.clone()).is_some() {
                        metrics.latest_replaced.inc();
                    } else {
                        return;
                    }
                }
                _ => {}
            }
            metrics.slow_consumer_drops(policy, 1);
            return;
        }
        self.held_bytes = bytes;
        self.held.push(frame.clone());
    }

    /// Drops the held messages numbered up to `upto`: the client has them.
    fn drop_held_upto(&mut self, upto: u64) {
        self.held.retain(|frame| frame.message_seq().is_none_or(|seq| seq > upto));
    }
}

impl Clustered {
    fn new(cluster: Arc<Membership>) -> Self {
        Self {
            cluster,
            remote: BTreeMap::new(),
            syncing: false,
            generation: 0,
            subscribed: false,
            deferred: VecDeque::new(),
            waiting: HashMap::new(),
            unechoed: VecDeque::new(),
            joining: HashMap::new(),
            epoch: None,
            diverged: false,
            ahead: HashMap::new(),
        }
    }

    fn is_settled(&self) -> bool {
        !self.syncing && self.deferred.is_empty() && self.waiting.is_empty() && self.joining.is_empty()
    }
}

impl RoomState {
    /// The cluster, when publishes go through it now: clustered and the
    /// backplane up. Otherwise the room numbers and delivers on its own.
    /// A publish the backplane cannot take counts as a relay error.
    pub(super) fn relaying(&self) -> Option<&Arc<Membership>> {
        let clustered = self.cluster.0.as_ref()?;
        if clustered.subscribed && clustered.cluster.is_connected() {
            return Some(&clustered.cluster);
        }
        self.metrics.relay_errors.inc();
        None
    }

    /// Sends a publish through the backplane, which numbers it; it is
    /// delivered here when it comes back on the room's channel.
    pub(super) fn relay_publish(
        &mut self,
        cell: &Arc<RoomCell>,
        from: UserId,
        data: Box<RawValue>,
        publisher: Publisher,
        at: Instant,
    ) {
        let floor = self.stream.latest();
        let Some(clustered) = self.cluster.0.as_mut() else { return };
        let cluster = clustered.cluster.clone();
        let token = cluster.token();
        let except = match &publisher {
            Publisher::Member { conn, echo: false, .. } => Some(conn.0),
            _ => None,
        };
        let body = Body::Message {
            room: self.name.clone(),
            from: from.clone(),
            data: data.get().to_owned(),
            ts: now_ms(),
            token,
            except,
        };
        let call = cluster.publish_sequenced(&self.name, body, floor, self.stream.namespace.history);
        clustered.waiting.insert(token, Waiting { publisher, from, data, acked: false, at });
        let cell = cell.clone();
        cluster.spawn(async move {
            let result = call.await;
            cell.send(RoomMsg::Numbered { token, result });
        });
    }

    /// Acks a member's publish with its `seq`, once.
    fn ack(&mut self, waiting: &mut Waiting, seq: u64) {
        if waiting.acked {
            return;
        }
        waiting.acked = true;
        if let Publisher::Member { conn, id: Some(id), .. } = &waiting.publisher {
            self.send_to(*conn, &ServerFrame::Ack { seq: Some(seq), id: Some(id) }.encode());
        }
    }

    /// Sets a member aside until `written` (its directory entry) is done
    /// and, for a join with `since`, the room's history is read; then
    /// [`Self::admitted`] lets it in.
    pub(super) fn wait_for(&mut self, cell: &Arc<RoomCell>, conn: ConnId, mut joining: Joining, written: Option<Pending<()>>) {
        let Some(clustered) = self.cluster.0.as_mut() else { return };
        let cluster = clustered.cluster.clone();
        let ticket = cluster.token();
        joining.ticket = ticket;
        let read = joining.since.as_ref().map(|since| {
            let limit = joining.latest.saturating_sub(since.seq).min(self.stream.namespace.history.size as u64) as usize;
            cluster.checked("history read", cluster.relay.history(&Channel::Room(self.name.clone()), since.seq, limit))
        });
        clustered.joining.insert(conn, joining);
        let cell = cell.clone();
        cluster.spawn(async move {
            if let Some(written) = written {
                let _ = written.await;
            }
            let recorded = match read {
                Some(read) => Some(Box::new(read.await)),
                None => None,
            };
            cell.send(RoomMsg::Admitted { conn, ticket, recorded });
        });
    }

    /// The joining members that waited for the room to catch up with what
    /// their client saw on another node, and now may come in: caught up,
    /// or (`all`, after the room re-synced, or with the backplane away)
    /// waiting for what may never come.
    pub(super) fn caught_up(&self, all: bool) -> Vec<(ConnId, u64)> {
        let Some(clustered) = self.cluster.0.as_ref() else { return Vec::new() };
        let latest = self.stream.latest();
        let all = all || !clustered.cluster.relay.is_connected();
        clustered
            .joining
            .iter()
            .filter(|(_, j)| j.recorded.is_some() && (all || j.since.as_ref().is_none_or(|s| s.seq <= latest)))
            .map(|(conn, joining)| (*conn, joining.ticket))
            .collect()
    }

    /// Lets in a member whose join waited (see [`Self::wait_for`]), with
    /// the history read for it (`None`: none was asked, or it waited for
    /// the room to catch up), or drops it if its connection gave up or fell
    /// behind meanwhile. Returns what arrived for it in the meantime.
    pub(super) fn admitted(
        &mut self,
        cell: &Arc<RoomCell>,
        conn: ConnId,
        ticket: u64,
        recorded: Option<Result<Recorded, RelayError>>,
    ) -> Vec<RoomMsg> {
        let Some(clustered) = self.cluster.0.as_mut() else { return Vec::new() };
        if clustered.joining.get(&conn).is_none_or(|joining| joining.ticket != ticket) {
            // For an earlier join of this connection, long done.
            return Vec::new();
        }
        let Some(mut joining) = clustered.joining.remove(&conn) else { return Vec::new() };
        // Waited already (see below): it comes in now.
        let waited = recorded.is_none() && joining.recorded.is_some();
        let recorded = match recorded {
            Some(read) => read.ok(),
            None => joining.recorded.take(),
        };
        // The client saw messages elsewhere that have not reached this node
        // yet: it comes in once they have, and they are not sent to it again.
        if let (Some(since), Some(read)) = (&joining.since, &recorded) {
            let wait = !waited
                && since.seq > self.stream.latest()
                && since.seq <= read.latest
                && since.epoch.as_deref().is_none_or(|e| *e == *read.epoch)
                && clustered.cluster.relay.is_connected();
            if wait {
                joining.recorded = recorded;
                clustered.joining.insert(conn, joining);
                // Numbers the counter skipped (raised past a node's own
                // numbering after an outage) never come: it comes in at the
                // latest after a while.
                let cell = cell.clone();
                clustered.cluster.spawn(async move {
                    tokio::time::sleep(CATCH_UP).await;
                    cell.send(RoomMsg::Admitted { conn, ticket, recorded: None });
                });
                return Vec::new();
            }
        }
        let then = std::mem::take(&mut joining.then);
        // The newest message past the bound goes last, as a `latest` room's
        // slot would have delivered it.
        if let Some(newest) = joining.newest.take() {
            joining.held.push(newest);
        }
        if joining.overflowed {
            joining.outbox.slow_consumer(&self.metrics);
        }
        if joining.reply.is_closed() && joining.was_member && !joining.overflowed {
            // Its connection stopped waiting for a join again: still a
            // member, as before it asked, with what came meanwhile.
            for frame in &joining.held {
                self.deliver(&joining.outbox, frame);
            }
            self.members.insert(conn, (joining.user, joining.outbox));
            return then;
        }
        if joining.overflowed || joining.reply.is_closed() {
            self.members.insert(conn, (joining.user, joining.outbox));
            self.remove(conn);
            return then;
        }
        let epoch: Arc<str> = match &recorded {
            Some(read) => read.epoch.as_str().into(),
            None => self.epoch(),
        };
        let mut latest = joining.latest;
        let replay = match (&joining.since, recorded) {
            (None, _) => None,
            (Some(_), None) => Some(None),
            (Some(since), Some(read)) => {
                let same_epoch = since.epoch.as_deref().is_none_or(|e| *e == *read.epoch);
                if !same_epoch || since.seq > read.latest {
                    Some(None)
                } else if since.seq >= latest {
                    let upto = since.seq;
                    latest = upto;
                    joining.drop_held_upto(upto);
                    // Let in before the room caught up (it waited long
                    // enough): what it has is not sent again.
                    if upto > self.stream.latest() {
                        if let Some(clustered) = self.cluster.0.as_mut() {
                            clustered.ahead.insert(conn, upto);
                        }
                    }
                    Some(Some(Vec::new()))
                } else {
                    Some(self.replayed(read.entries, since.seq, latest))
                }
            }
        };
        let Joining { user, outbox, id, since, reply, held, .. } = joining;
        self.members.insert(conn, (user, outbox.clone()));
        let greeting = Greeting { id: id.as_deref(), since: since.as_deref(), latest, epoch: &epoch, replay, held };
        let (users, recovered) = self.greet(&outbox, greeting);
        let _ = reply.send(Ok(JoinReply { room: cell.clone(), users, recovered }));
        then
    }

    /// The `message` frames of the history entries numbered `(after, upto]`,
    /// or `None` unless every one of them is there.
    fn replayed(&self, entries: Vec<(u64, crate::cluster::codec::Envelope)>, after: u64, upto: u64) -> Option<Vec<Encoded>> {
        let mut frames = Vec::with_capacity(entries.len());
        let mut next = after + 1;
        for (seq, envelope) in entries {
            if seq > upto {
                break;
            }
            if seq != next {
                return None;
            }
            frames.push(super::super::message_frame(&self.name, seq, envelope.body)?);
            next += 1;
        }
        (next == upto + 1).then_some(frames)
    }

    /// A publish of this room was numbered (or could not be): ack it; if
    /// it was never sent, deliver it here alone; if its fate is unknown,
    /// tell the publisher.
    pub(super) fn numbered(&mut self, token: u64, result: Result<u64, RelayError>) {
        let Some(mut waiting) = self.cluster.0.as_mut().and_then(|c| c.waiting.remove(&token)) else { return };
        match result {
            Ok(seq) => {
                let came_back = waiting.acked;
                self.ack(&mut waiting, seq);
                // Numbered but not back, and the subscription is down: it
                // will not come back, so deliver it here.
                let lost = !came_back && self.cluster.0.as_ref().is_some_and(|c| !c.cluster.relay.is_connected());
                if lost && self.stream.seq.fetch_max(seq, Ordering::Relaxed) < seq {
                    let frame =
                        ServerFrame::Message { room: &self.name, from: &waiting.from, data: &waiting.data, seq, ts: now_ms() }
                            .encode();
                    let except = match &waiting.publisher {
                        Publisher::Member { conn, echo: false, .. } => Some(*conn),
                        _ => None,
                    };
                    self.fan_out(&frame, except);
                    self.enqueued(waiting.at);
                } else if !came_back {
                    self.unechoed(seq, waiting.at);
                }
                if let Publisher::Server { reply } = waiting.publisher {
                    let _ = reply.send(seq);
                }
            }
            Err(RelayError::Unreachable(_)) if !waiting.acked => {
                let (seq, frame) = self.message(&waiting.from, &waiting.data);
                self.ack(&mut waiting, seq);
                match waiting.publisher {
                    Publisher::Member { conn, echo, .. } => self.fan_out(&frame, (!echo).then_some(conn)),
                    Publisher::Server { reply } => {
                        self.fan_out(&frame, None);
                        let _ = reply.send(seq);
                    }
                }
                self.enqueued(waiting.at);
            }
            // Sent, but unanswered: Redis may have numbered and published it
            // (then it arrives like any other), or not. Numbering it here
            // could give one message two numbers.
            Err(_) => match waiting.publisher {
                Publisher::Member { conn, id: Some(id), .. } if !waiting.acked => {
                    if let Some((_, outbox)) = self.members.get(&conn) {
                        let message = "the cluster backplane did not answer: the message may not have been delivered";
                        let error = ServerFrame::Error { code: ErrorCode::Internal, message, id: Some(&id) };
                        outbox.deliver(&error.encode(), &self.metrics);
                    }
                }
                // The dropped reply port answers the API caller 503.
                _ => {}
            },
        }
    }

    /// Remembers when a publish numbered ahead of its message's return
    /// reached the server; only the latest few are kept.
    pub(super) fn unechoed(&mut self, seq: u64, at: Instant) {
        const KEPT: usize = 64;
        let Some(clustered) = self.cluster.0.as_mut() else { return };
        if clustered.unechoed.len() == KEPT {
            clustered.unechoed.pop_front();
        }
        clustered.unechoed.push_back((seq, at));
    }

    /// An envelope from the room's channel.
    pub(super) fn relayed(&mut self, seq: Option<u64>, origin: NodeId, body: Body) {
        let Some(clustered) = self.cluster.0.as_mut() else { return };
        let own = origin == clustered.cluster.node;
        match body {
            Body::Message { from, data, ts, token, except, .. } => {
                let Some(seq) = seq else { return };
                // When this node's own publish reached the server.
                let mut at = None;
                if own {
                    if let Some(mut waiting) = clustered.waiting.remove(&token) {
                        at = Some(waiting.at);
                        self.ack(&mut waiting, seq);
                        if let Some(clustered) = self.cluster.0.as_mut() {
                            clustered.waiting.insert(token, waiting);
                        }
                    } else if let Some(i) = clustered.unechoed.iter().position(|&(s, _)| s == seq) {
                        at = clustered.unechoed.remove(i).map(|(_, at)| at);
                    }
                }
                // Only after Redis lost its counters can a number repeat.
                if self.stream.seq.fetch_max(seq, Ordering::Relaxed) >= seq {
                    tracing::debug!(room = %self.name, seq, "dropped a message numbered below one delivered here");
                    return;
                }
                let Ok(data) = RawValue::from_string(data) else {
                    self.metrics.relay_errors.inc();
                    return;
                };
                let frame = ServerFrame::Message { room: &self.name, from: &from, data: &data, seq, ts }.encode();
                let except = if own { except.map(ConnId) } else { None };
                self.fan_out(&frame, except);
                self.cluster.forget_ahead(seq);
                if let Some(at) = at {
                    self.enqueued(at);
                }
            }
            Body::Presence { user, joined, .. } if !own => self.remote_change(origin, user, joined),
            Body::Typing { user, typing, .. } if !own => {
                let frame = ServerFrame::Typing { room: &self.name, user: &user, typing }.encode();
                self.fan_out(&frame, None);
            }
            _ => {}
        }
    }

    /// `node` now has (or no longer has) `user` in the room.
    pub(super) fn remote_change(&mut self, node: NodeId, user: UserId, joined: bool) {
        let was = self.present(&user);
        let Some(clustered) = self.cluster.0.as_mut() else { return };
        let nodes = clustered.remote.entry(user.clone()).or_default();
        if joined {
            if !nodes.contains(&node) {
                nodes.push(node);
            }
        } else {
            nodes.retain(|n| *n != node);
            if nodes.is_empty() {
                clustered.remote.remove(&user);
            }
        }
        let now = self.present(&user);
        self.announce(&user, was, now);
    }

    /// Drops the users of dead `nodes`.
    pub(super) fn nodes_gone(&mut self, nodes: &BTreeSet<NodeId>) {
        let Some(clustered) = self.cluster.0.as_mut() else { return };
        let mut changed = Vec::new();
        clustered.remote.retain(|user, on| {
            let before = on.len();
            on.retain(|n| !nodes.contains(n));
            if on.len() != before && on.is_empty() {
                changed.push(user.clone());
            }
            !on.is_empty()
        });
        let told: Vec<Encoded> = changed
            .into_iter()
            .filter_map(|user| {
                let now = self.present(&user);
                self.counted(&user, true, now)
            })
            .collect();
        for frame in told {
            self.fan_out(&frame, None);
        }
    }

    /// Subscribes to the room's channel and reads the other nodes'
    /// members; membership changes wait until the answer is in.
    pub(super) fn sync(&mut self, cell: &Arc<RoomCell>, initial: bool) {
        let floor = self.stream.latest();
        let users: Vec<UserId> = self.users.iter().cloned().collect();
        let Some(clustered) = self.cluster.0.as_mut() else { return };
        clustered.syncing = true;
        clustered.generation += 1;
        let generation = clustered.generation;
        let cluster = clustered.cluster.clone();
        let channel = Channel::Room(self.name.clone());
        let subscribed = cluster.checked("subscribe", cluster.relay.subscribe(&channel));
        let rewrite = (!initial)
            .then(|| cluster.checked("re-sync", cluster.directory.replace_room(&cluster.node, &self.name, users)));
        // Numbers this room gave on its own are not the cluster's: the
        // room's numbering goes on above them, in a new epoch.
        let renew = std::mem::take(&mut clustered.diverged);
        if floor > 0 || renew {
            cluster.background("raise counter", cluster.relay.raise_counter(&channel, floor, renew));
        }
        let (cell, name) = (cell.clone(), self.name.clone());
        cluster.clone().spawn(async move {
            let outcome = async {
                subscribed.await?;
                let changes = match rewrite {
                    Some(rewrite) => rewrite.await?,
                    None => Changes::default(),
                };
                let members = cluster.checked("presence query", cluster.directory.room_members(&name)).await?;
                let recorded = cluster.checked("epoch read", cluster.relay.history(&channel, 0, 0)).await?;
                Ok::<_, RelayError>(SyncOutcome { changes, members, recorded })
            };
            cell.send(RoomMsg::Synced { generation, outcome: outcome.await.ok().map(Box::new) });
        });
    }

    /// Takes in what the latest sync learnt: tells the other nodes how this
    /// node's entries changed, and the members who arrived or left
    /// meanwhile. Returns whether the sync is over (an older one's answer
    /// is ignored: the latest is still on its way).
    pub(super) fn synced(&mut self, generation: u64, outcome: Option<Box<SyncOutcome>>) -> bool {
        let Some(clustered) = self.cluster.0.as_mut() else { return true };
        if generation != clustered.generation {
            return false;
        }
        clustered.syncing = false;
        clustered.subscribed = outcome.is_some();
        let Some(SyncOutcome { changes, members, recorded }) = outcome.map(|o| *o) else {
            tracing::warn!(room = %self.name, "cluster: room sync failed; serving it locally until the backplane is back");
            return true;
        };
        clustered.epoch = Some(recorded.epoch.into());
        // A room new here starts where the cluster's numbering is. One with
        // members keeps its own: what is still on its way on the channel
        // must not be taken for a repeat.
        if self.members.is_empty() && clustered.joining.is_empty() {
            self.stream.seq.fetch_max(recorded.latest, Ordering::Relaxed);
        }
        let cluster = clustered.cluster.clone();
        let channel = Channel::Room(self.name.clone());
        for (users, joined) in [(changes.removed, false), (changes.added, true)] {
            for user in users {
                cluster.publish(&channel, Body::Presence { room: self.name.clone(), user, joined });
            }
        }
        let mut remote: BTreeMap<UserId, Vec<NodeId>> = BTreeMap::new();
        for (node, user) in members {
            if node != cluster.node {
                remote.entry(user).or_default().push(node);
            }
        }
        let old = std::mem::replace(&mut clustered.remote, remote);
        let affected: BTreeSet<UserId> =
            old.keys().chain(self.cluster.0.as_ref().map(|c| c.remote.keys()).into_iter().flatten()).cloned().collect();
        let told: Vec<Encoded> = affected
            .into_iter()
            .filter_map(|user| {
                let was = self.users.contains(&user) || old.contains_key(&user);
                let now = self.present(&user);
                self.counted(&user, was, now)
            })
            .collect();
        for frame in told {
            self.fan_out(&frame, None);
        }
        true
    }
}
