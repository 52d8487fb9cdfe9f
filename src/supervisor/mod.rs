//! The supervision tree of a node's ractor actors, on their own multi-thread
//! runtime (see `server`).
//!
//! ```text
//! root (Supervisor)                              gives up: the process exits (status 70)
//! ├── presence registry (PresenceRegistry)        started first: rooms report to it
//! ├── room registry shards (Shard × N)            one per hash bucket of room names
//! │   └── rooms (RoomCell), created on first join, retired when empty;
//! │       run by their shard's actor, one turn at a time
//! └── cluster link (Link), with clustering           relays to and from the other nodes
//! ```
//!
//! Every supervisor restarts a child that fails, at most
//! `supervision.max_restarts` times within `supervision.window_ms`
//! ([`RestartBudget`]). One failure more and a shard fails itself, so the
//! root decides; the root, past its own budget (or if it stops), gives up:
//! it logs why and the server exits with status 70 rather than run half
//! alive. Failures and restarts are counted in `herald_actor_failures_total`
//! and `herald_actor_restarts_total`.
//!
//! # Where the truth lives
//!
//! Not in the actors. The state of the presence registry, of each shard and
//! of each room lives in a cell (`PresenceCell`, `ShardCell`, `RoomCell`)
//! owned by the actor's supervisor, and so does the actor's queue of
//! messages (a [`Mailbox`]); the actor is the one writer that takes messages
//! from the queue and applies them to the state in order. A restart starts a
//! new actor over the same cell, which carries on with the queue. So after a
//! room restarts its members are still members and `seq` carries on; after
//! presence restarts every answer is as complete as before, and nobody sees
//! a `user_left` or `user_joined` for it; and nothing sent while an actor
//! was down is lost, only the one message it failed on. Rebuilding state
//! from the connections instead would mean asking every connection after
//! every failure, with the answers racing new joins and leaves.
//!
//! Connection actors live on the HTTP workers (actix), outside this tree;
//! they reach it through the [`RoomRegistry`] and [`Presence`] handles
//! returned by [`start`]. A panic while a connection handles a frame closes
//! that connection alone, with 1011 (see `connection::core`).

mod budget;
mod mailbox;

use std::sync::Arc;
use std::time::Instant;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SpawnErr, SupervisionEvent};

pub use budget::RestartBudget;
pub use mailbox::Mailbox;

use crate::cluster::link::{Link, LinkCell, Targets};
use crate::cluster::{Cluster, Membership};
use crate::config::SupervisionConfig;
use crate::connection::registry::Registry;
use crate::metrics::{ActorKind, Metrics};
use crate::presence::{Presence, PresenceCell, PresenceRegistry};
use crate::rooms::shard::Shard;
use crate::rooms::{RoomRegistry, ShardCell};

/// What the root calls when it gives up, with the reason.
pub type GiveUp = Arc<dyn Fn(String) + Send + Sync>;

/// The handles of a started tree.
#[derive(Clone)]
pub struct Tree {
    pub root: ActorRef<()>,
    pub rooms: RoomRegistry,
    pub presence: Presence,
    /// The cluster link, with clustering.
    pub link: Option<Arc<LinkCell>>,
}

/// What a clustered node's tree needs besides the rest.
pub struct Clustering {
    pub cluster: Arc<Membership>,
    /// The node's open connections, which broadcasts from other nodes reach.
    pub connections: Arc<Registry>,
}

/// What the root needs to start and restart its children.
pub struct SupervisorArgs {
    pub presence: Arc<PresenceCell>,
    pub shards: Vec<Arc<ShardCell>>,
    pub link: Option<Arc<LinkCell>>,
    pub supervision: SupervisionConfig,
    pub metrics: Arc<Metrics>,
    pub give_up: GiveUp,
}

/// The root supervisor.
pub struct Supervisor;

pub struct SupervisorState {
    args: SupervisorArgs,
    budget: RestartBudget,
}

/// A child of the root.
#[derive(Debug, Clone, Copy)]
enum Child {
    Presence,
    Shard(usize),
    Link,
}

impl SupervisorState {
    fn child(&self, actor: ActorId) -> Option<Child> {
        if self.args.presence.mailbox.holds(actor) {
            return Some(Child::Presence);
        }
        if self.args.link.as_ref().is_some_and(|link| link.mailbox.holds(actor)) {
            return Some(Child::Link);
        }
        self.args.shards.iter().position(|s| s.mailbox.holds(actor)).map(Child::Shard)
    }

    async fn start(&self, myself: &ActorRef<()>, child: Child) -> Result<(), SpawnErr> {
        match child {
            Child::Presence => {
                Actor::spawn_linked(None, PresenceRegistry, self.args.presence.clone(), myself.get_cell()).await?;
            }
            Child::Shard(i) => {
                Actor::spawn_linked(None, Shard, self.args.shards[i].clone(), myself.get_cell()).await?;
            }
            Child::Link => {
                if let Some(link) = &self.args.link {
                    Actor::spawn_linked(None, Link, link.clone(), myself.get_cell()).await?;
                }
            }
        }
        Ok(())
    }
}

impl Child {
    fn kind(self) -> ActorKind {
        match self {
            Self::Presence => ActorKind::Presence,
            Self::Shard(_) => ActorKind::Registry,
            Self::Link => ActorKind::Cluster,
        }
    }
}

impl Actor for Supervisor {
    type Msg = ();
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(&self, myself: ActorRef<()>, args: SupervisorArgs) -> Result<SupervisorState, ActorProcessingErr> {
        let budget = RestartBudget::new(&args.supervision);
        let state = SupervisorState { args, budget };
        state.start(&myself, Child::Presence).await?;
        for i in 0..state.args.shards.len() {
            state.start(&myself, Child::Shard(i)).await?;
        }
        if state.args.link.is_some() {
            state.start(&myself, Child::Link).await?;
        }
        Ok(state)
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<()>,
        event: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let (actor, error) = match event {
            SupervisionEvent::ActorFailed(cell, error) => (cell.get_id(), Some(error.to_string())),
            SupervisionEvent::ActorTerminated(cell, _, _) => (cell.get_id(), None),
            _ => return Ok(()),
        };
        let Some(child) = state.child(actor) else { return Ok(()) };
        let kind = child.kind();
        let error = match error {
            Some(error) => {
                state.args.metrics.actor_failed(kind);
                error
            }
            // Children only stop with the node; one that stops otherwise is
            // restarted all the same, or its mailbox would fill for nobody.
            None => "stopped".into(),
        };
        tracing::error!(actor = kind.as_str(), %error, "supervised actor failed");
        if !state.budget.allow(Instant::now()) {
            let limit = &state.args.supervision;
            let reason = format!(
                "the {} actor failed ({error}) past the limit of {} restarts within {} ms",
                kind.as_str(),
                limit.max_restarts,
                limit.window_ms
            );
            tracing::error!(%reason, "supervision gave up: stopping the node");
            (state.args.give_up)(reason);
            myself.stop(Some("gave up".into()));
            return Ok(());
        }
        match state.start(&myself, child).await {
            Ok(()) => {
                state.args.metrics.actor_restarted(kind);
                tracing::warn!(actor = kind.as_str(), "supervised actor restarted");
            }
            Err(error) => {
                let reason = format!("could not restart the {} actor: {error}", kind.as_str());
                tracing::error!(%reason, "supervision gave up: stopping the node");
                (state.args.give_up)(reason);
                myself.stop(Some("gave up".into()));
            }
        }
        Ok(())
    }
}

/// Why the tree could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("could not spawn the supervision tree: {0}")]
    Spawn(SpawnErr),
    #[error("the supervision tree's actors did not start in time")]
    Attach,
}

/// Starts the tree. Must run on the actors' runtime. `give_up` is called
/// once if the root gives up (or stops for any other reason).
pub async fn start(
    shards: usize,
    metrics: Arc<Metrics>,
    supervision: &SupervisionConfig,
    give_up: GiveUp,
    clustering: Option<Clustering>,
) -> Result<Tree, StartError> {
    let cluster = Cluster::from(clustering.as_ref().map(|c| c.cluster.clone()));
    let presence_cell = Arc::new(PresenceCell::new(metrics.clone(), cluster.clone()));
    let presence = Presence::new(presence_cell.clone());
    let shards: Vec<Arc<ShardCell>> = (0..shards.max(1))
        .map(|_| Arc::new(ShardCell::new(presence.clone(), metrics.clone(), supervision.clone(), cluster.clone())))
        .collect();
    let rooms = RoomRegistry::new(shards.clone());
    let link = clustering.map(|c| {
        let targets = Targets { rooms: rooms.clone(), presence: presence.clone(), connections: c.connections };
        LinkCell::start(c.cluster, targets)
    });
    let args = SupervisorArgs {
        presence: presence_cell.clone(),
        shards: shards.clone(),
        link: link.clone(),
        supervision: supervision.clone(),
        metrics,
        give_up: give_up.clone(),
    };
    let (root, handle) = Actor::spawn(None, Supervisor, args).await.map_err(StartError::Spawn)?;
    // Children attach to their mailboxes as they start; wait for all of them.
    let attached = || {
        presence_cell.mailbox.actor().is_some()
            && shards.iter().all(|s| s.mailbox.actor().is_some())
            && link.as_ref().is_none_or(|l| l.mailbox.actor().is_some())
    };
    let deadline = tokio::time::Instant::now() + crate::rpc::CALL_TIMEOUT;
    while !attached() {
        if tokio::time::Instant::now() >= deadline {
            return Err(StartError::Attach);
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    // The root never stops on its own while the node runs: when it does, the
    // tree is gone and the node must not carry on without it.
    tokio::spawn(async move {
        let outcome = handle.await;
        give_up(match outcome {
            Ok(()) => "the root supervisor stopped".into(),
            Err(error) => format!("the root supervisor failed: {error}"),
        });
    });
    Ok(Tree { root, rooms, presence, link })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::mpsc;

    use super::*;
    use crate::connection::testing::collector;
    use crate::connection::{ConnId, Member};

    async fn tree(max_restarts: u32) -> (Tree, Arc<Metrics>, mpsc::UnboundedReceiver<String>) {
        let metrics = Arc::new(Metrics::new());
        let (tx, rx) = mpsc::unbounded_channel();
        let supervision = SupervisionConfig { max_restarts, window_ms: 60_000 };
        let give_up: GiveUp = Arc::new(move |reason| {
            let _ = tx.send(reason);
        });
        let tree = start(2, metrics.clone(), &supervision, give_up, None).await.unwrap();
        (tree, metrics, rx)
    }

    /// Waits until `done` holds, for at most two seconds.
    async fn until(done: impl Fn() -> bool) {
        for _ in 0..200 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("condition not reached");
    }

    fn restarts(metrics: &Metrics, kind: ActorKind) -> String {
        let text = metrics.render();
        let series = format!("herald_actor_restarts_total{{actor=\"{}\"}} ", kind.as_str());
        text.lines().find_map(|l| l.strip_prefix(&series)).unwrap_or("missing").to_owned()
    }

    #[actix_web::test]
    async fn the_root_restarts_presence_over_its_state_then_gives_up_past_the_limit() {
        let (tree, metrics, mut gave_up) = tree(1).await;
        let (outbox, _) = collector(8);
        tree.presence.online(Member { conn: ConnId(1), user: "alice".into(), outbox });
        tree.presence.room_joined("hall".into(), "alice".into());

        let first = tree.presence.crash().unwrap();
        until(|| tree.presence.actor().is_some_and(|now| now != first)).await;
        assert_eq!(restarts(&metrics, ActorKind::Presence), "1");
        let status = tree.presence.status(vec!["alice".into()]).await.unwrap();
        assert!(status["alice"], "the restarted registry still knows alice");
        assert_eq!(tree.presence.room_users("hall".into()).await.unwrap(), ["alice"]);
        assert!(gave_up.try_recv().is_err(), "one restart is within the limit");

        tree.presence.crash().unwrap();
        let reason = tokio::time::timeout(Duration::from_secs(2), gave_up.recv()).await.unwrap().unwrap();
        assert!(reason.contains("presence"), "{reason}");
        assert_eq!(restarts(&metrics, ActorKind::Presence), "1", "no restart past the limit");
    }

    #[actix_web::test]
    async fn a_shard_restarts_its_rooms_then_escalates_to_the_root() {
        let (tree, metrics, mut gave_up) = tree(1).await;
        let (outbox, frames) = collector(64);
        let member = Member { conn: ConnId(1), user: "alice".into(), outbox };
        let (room, _) = tree.rooms.join("r".into(), member).await.unwrap();
        let shard = tree.rooms.shard_actor("r").unwrap();

        // Within the shard's limit: the room restarts, the shard stays.
        let first = tree.rooms.crash_room("r").unwrap();
        until(|| tree.rooms.room_life("r").is_some_and(|now| now != first)).await;
        assert_eq!(restarts(&metrics, ActorKind::Room), "1");
        assert_eq!(tree.rooms.shard_actor("r"), Some(shard));

        // Past it: the shard fails, the root restarts it, and the new shard
        // starts the room again over the same members.
        let second = tree.rooms.crash_room("r").unwrap();
        until(|| tree.rooms.shard_actor("r").is_some_and(|now| now != shard)).await;
        until(|| tree.rooms.room_life("r").is_some_and(|now| now != second)).await;
        assert_eq!(restarts(&metrics, ActorKind::Room), "1");
        assert_eq!(restarts(&metrics, ActorKind::Registry), "1");
        assert!(gave_up.try_recv().is_err(), "the root's own limit is not reached");

        frames.lock().clear();
        let data = serde_json::value::RawValue::from_string("1".into()).unwrap();
        room.publish(ConnId(1), "alice".into(), &data, true, None);
        until(|| frames.lock().iter().any(|f| f.contains(r#""seq":1"#))).await;
    }

    #[actix_web::test]
    async fn what_is_sent_while_an_actor_dies_waits_for_the_next_one() {
        let (tree, metrics, _) = tree(5).await;
        let (outbox, _) = collector(8);
        tree.presence.online(Member { conn: ConnId(1), user: "alice".into(), outbox });
        tree.presence.room_joined("hall".into(), "alice".into());
        // Queued right behind the fatal message, before any restart.
        let first = tree.presence.crash().unwrap();
        tree.presence.offline("alice".into(), ConnId(1));
        tree.presence.room_left("hall".into(), "alice".into());
        tree.presence.room_joined("hall".into(), "bob".into());
        let status = tree.presence.status(vec!["alice".into()]).await.unwrap();
        assert!(!status["alice"], "the offline after the crash was applied");
        assert_eq!(tree.presence.room_users("hall".into()).await.unwrap(), ["bob"]);
        assert_ne!(tree.presence.actor(), Some(first));
        assert_eq!(restarts(&metrics, ActorKind::Presence), "1");

        // The same for a room: a leave queued behind the crash still lands.
        let (a, _) = collector(8);
        let (b, b_frames) = collector(8);
        tree.rooms.join("r".into(), Member { conn: ConnId(2), user: "a".into(), outbox: a }).await.unwrap();
        tree.rooms.join("r".into(), Member { conn: ConnId(3), user: "b".into(), outbox: b }).await.unwrap();
        tree.rooms.crash_room("r").unwrap();
        tree.rooms.leave("r".into(), ConnId(2));
        until(|| b_frames.lock().iter().any(|f| f.contains("user_left"))).await;
        assert_eq!(restarts(&metrics, ActorKind::Room), "1");
    }

    #[test]
    fn a_failed_spawn_says_why_once() {
        let error = StartError::Spawn(SpawnErr::ActorAlreadyStarted);
        assert!(std::error::Error::source(&error).is_none(), "the cause is in the message, not also a source");
        let cause = SpawnErr::ActorAlreadyStarted.to_string();
        assert_eq!(anyhow::Error::new(error).to_string().matches(&cause).count(), 1);
    }
}
