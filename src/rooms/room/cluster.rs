//! A room's side in a cluster: its channel, the other nodes' members,
//! and publishes numbered by the backplane.

use super::*;

/// What a sync learnt.
pub(crate) struct SyncOutcome {
    /// How this node's own entries changed (a rewrite after an outage).
    changes: Changes,
    /// Every user in the room on a live node, with that node.
    members: Vec<(NodeId, UserId)>,
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

    /// Runs `then` once `written` is done (at once without a write).
    pub(super) fn after(&self, written: Option<Pending<()>>, then: impl FnOnce() + Send + 'static) {
        match (written, &self.0) {
            (Some(written), Some(clustered)) => clustered.cluster.spawn(async move {
                let _ = written.await;
                then();
            }),
            _ => then(),
        }
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
        }
    }

    fn is_settled(&self) -> bool {
        !self.syncing && self.deferred.is_empty() && self.waiting.is_empty()
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
        let floor = self.seq.load(Ordering::Relaxed);
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
        let call = cluster.publish_sequenced(&self.name, body, floor);
        clustered.waiting.insert(token, Waiting { publisher, from, data, acked: false, at });
        let cell = cell.clone();
        cluster.spawn(async move {
            let result = call.await;
            cell.send(RoomMsg::Numbered { token, result });
        });
    }

    /// Acks a member's publish with its `seq`, once.
    fn ack(&self, waiting: &mut Waiting, seq: u64) {
        if waiting.acked {
            return;
        }
        waiting.acked = true;
        if let Publisher::Member { conn, id: Some(id), .. } = &waiting.publisher {
            if let Some((_, outbox)) = self.members.get(conn) {
                outbox.deliver(&ServerFrame::Ack { seq: Some(seq), id: Some(id) }.encode(), &self.metrics);
            }
        }
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
                if lost && self.seq.fetch_max(seq, Ordering::Relaxed) < seq {
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
                if self.seq.fetch_max(seq, Ordering::Relaxed) >= seq {
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
        for user in changed {
            let now = self.present(&user);
            self.announce(&user, true, now);
        }
    }

    /// Subscribes to the room's channel and reads the other nodes'
    /// members; membership changes wait until the answer is in.
    pub(super) fn sync(&mut self, cell: &Arc<RoomCell>, initial: bool) {
        let floor = self.seq.load(Ordering::Relaxed);
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
        if floor > 0 {
            cluster.background("raise counter", cluster.relay.raise_counter(&channel, floor));
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
                Ok::<_, RelayError>(SyncOutcome { changes, members })
            };
            cell.send(RoomMsg::Synced { generation, outcome: outcome.await.ok() });
        });
    }

    /// Takes in what the latest sync learnt: tells the other nodes how this
    /// node's entries changed, and the members who arrived or left
    /// meanwhile. Returns whether the sync is over (an older one's answer
    /// is ignored: the latest is still on its way).
    pub(super) fn synced(&mut self, generation: u64, outcome: Option<SyncOutcome>) -> bool {
        let Some(clustered) = self.cluster.0.as_mut() else { return true };
        if generation != clustered.generation {
            return false;
        }
        clustered.syncing = false;
        clustered.subscribed = outcome.is_some();
        let Some(SyncOutcome { changes, members }) = outcome else {
            tracing::warn!(room = %self.name, "cluster: room sync failed; serving it locally until the backplane is back");
            return true;
        };
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
        for user in affected {
            let was = self.users.contains(&user) || old.contains_key(&user);
            let now = self.present(&user);
            self.announce(&user, was, now);
        }
        true
    }
}
