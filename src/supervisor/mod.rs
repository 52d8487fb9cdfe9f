//! How Herald writes an actor, and the supervision tree that runs them.
//!
//! # One idiom
//!
//! Every actor of a node (each connection, each room, each room registry
//! shard, the presence registry, the cluster link) implements [`Actor`]:
//!
//! - typed messages ([`Actor::Msg`]: `ConnMsg`, `RoomMsg`, `ShardMsg`,
//!   `PresenceMsg`, `LinkMsg`);
//! - [`Actor::handle`], which applies one message to the actor's state: the
//!   actor is the state's one writer, and nothing outside it reads the
//!   state; questions are messages with a reply port ([`ask`]);
//! - a handle type for callers (`Outbox`, `RoomHandle`, `RoomRegistry`,
//!   `Presence`, `LinkHandle`) whose methods queue messages.
//!
//! What differs is who runs an actor, and so where its messages wait:
//!
//! - **Supervised actors** ([`Supervised`]: rooms, shards, presence, the
//!   link) live in a cell, an `Arc` holding their [`Mailbox`] and their
//!   state. A runner ([`actor::Runner`]) runs one as a ractor actor: it
//!   attaches to the mailbox and, each time it is woken ([`Wake`]), takes a
//!   bounded turn of messages, one at a time. Rooms have no runner of their
//!   own: a room with messages waiting asks its shard for a turn, and the
//!   shard's runner gives it one (see `rooms::room`), so an idle room costs
//!   its state and nothing else.
//! - **Connections** (`connection::core::Connection`) are owned by the
//!   worker loop that accepted their socket (`connection::task`), which
//!   hands them their messages as it polls them. Their mailbox is their
//!   outbox (`delivery::Outbox`), which holds one message (a close, or an
//!   injected crash), since that is all a connection is ever asked from
//!   outside; frames for the client are not messages to the connection but
//!   writes through the same outbox, which go to the socket on the
//!   delivering thread without a hop (see `delivery::outbox` for why). A
//!   connection that fails is not restarted, since its client reconnects:
//!   it is closed alone, with 1011. A ractor runner and a mailbox per
//!   connection would add a hop to every delivery and about 80 bytes to
//!   every idle connection.
//!
//! The cell, not the run, owns the queue and the state. When an actor
//! panics or fails, only the message in hand is lost: its supervisor starts
//! a new run over the same cell, which carries on with the messages that
//! waited. So after a room restarts its members are still members and `seq`
//! carries on; after presence restarts every answer is as complete as
//! before, and nobody sees a `user_left` or `user_joined` for it; and the
//! backlog of every kind of actor is one gauge
//! (`herald_actor_mailbox_backlog`). Rebuilding state from the connections
//! instead would mean asking every connection after every failure, with the
//! answers racing new joins and leaves.
//!
//! # The tree
//!
//! ```text
//! root (Supervisor)                         gives up: the process exits (status 70)
//! ├── presence registry (PresenceCell)      started first: rooms report to it
//! ├── room registry shards (ShardCell × N)  one per hash bucket of room names
//! │   └── rooms (RoomCell), created on first join, retired when empty;
//! │       each run by its shard, one turn at a time
//! └── cluster link (LinkCell), with clustering: relays to and from the other nodes
//!
//! HTTP workers (outside the tree)
//! └── connections (Connection<Ws>, Connection<Sse>), one per open socket,
//!     each run by the worker that accepted it; a failed one is closed (1011)
//! ```
//!
//! `server::tree` declares it: the children in the order they start, and
//! the restart limits (`supervision.max_restarts` within
//! `supervision.window_ms`, a [`RestartBudget`] per supervisor). The root
//! restarts a child that fails within its budget; a shard does the same for
//! its rooms and, one failure past its budget, fails itself so the root
//! decides. The root, past its own budget (or if it stops), gives up: it
//! logs why and the server exits with status 70 rather than run half
//! alive. Failures and restarts are counted in `herald_actor_failures_total`
//! and `herald_actor_restarts_total`.
//!
//! Connections are actors outside this tree: each worker loop supervises
//! its own, with the one policy above (closed with 1011, never restarted).

mod actor;
mod budget;
mod mailbox;

use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{ActorProcessingErr, ActorRef, SpawnErr, SupervisionEvent};

pub(crate) use actor::{ask, Actor, Child, Failure, Supervised, Wake};
#[cfg(test)]
pub(crate) use actor::Runner;
pub(crate) use budget::RestartBudget;
pub(crate) use mailbox::Mailbox;

use crate::config::SupervisionConfig;
use crate::metrics::Metrics;

/// What the root calls when it gives up, with the reason.
pub(crate) type GiveUp = Arc<dyn Fn(String) + Send + Sync>;

/// The root supervisor.
struct Supervisor;

struct Root {
    children: Vec<Arc<dyn Child>>,
    supervision: SupervisionConfig,
    metrics: Arc<Metrics>,
    give_up: GiveUp,
    budget: RestartBudget,
}

impl Root {
    /// Stops the node: past the budget, or a child that cannot start again.
    fn give_up(&self, myself: &ActorRef<Wake>, reason: String) {
        tracing::error!(%reason, "supervision gave up: stopping the node");
        (self.give_up)(reason);
        myself.stop(Some("gave up".into()));
    }
}

impl ractor::Actor for Supervisor {
    type Msg = Wake;
    type State = Root;
    type Arguments = Root;

    async fn pre_start(&self, myself: ActorRef<Wake>, root: Root) -> Result<Root, ActorProcessingErr> {
        for child in &root.children {
            child.spawn(myself.get_cell()).await?;
        }
        Ok(root)
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Wake>,
        event: SupervisionEvent,
        root: &mut Root,
    ) -> Result<(), ActorProcessingErr> {
        let (actor, error) = match event {
            SupervisionEvent::ActorFailed(cell, error) => (cell.get_id(), Some(error.to_string())),
            SupervisionEvent::ActorTerminated(cell, _, _) => (cell.get_id(), None),
            _ => return Ok(()),
        };
        let Some(child) = root.children.iter().find(|c| c.current() == Some(actor)).cloned() else {
            return Ok(());
        };
        let kind = child.kind();
        let error = match error {
            Some(error) => {
                root.metrics.actor_failed(kind);
                error
            }
            // Children only stop with the node; one that stops otherwise is
            // restarted all the same, or its mailbox would fill for nobody.
            None => "stopped".into(),
        };
        tracing::error!(actor = kind.as_str(), %error, "supervised actor failed");
        if !root.budget.allow(Instant::now()) {
            let limit = &root.supervision;
            let reason = format!(
                "the {} actor failed ({error}) past the limit of {} restarts within {} ms",
                kind.as_str(),
                limit.max_restarts,
                limit.window_ms
            );
            root.give_up(&myself, reason);
            return Ok(());
        }
        match child.spawn(myself.get_cell()).await {
            Ok(()) => {
                root.metrics.actor_restarted(kind);
                tracing::warn!(actor = kind.as_str(), "supervised actor restarted");
            }
            Err(error) => root.give_up(&myself, format!("could not restart the {} actor: {error}", kind.as_str())),
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

/// Starts a root supervisor over `children`, started in their order and
/// each restarted within `supervision`'s limits, and returns once every one
/// is attached to its mailbox. Must run on the actors' runtime. `give_up` is
/// called once if the root gives up (or stops for any other reason).
pub(crate) async fn start(
    children: Vec<Arc<dyn Child>>,
    supervision: &SupervisionConfig,
    metrics: Arc<Metrics>,
    give_up: GiveUp,
) -> Result<(), StartError> {
    let root = Root {
        children: children.clone(),
        supervision: supervision.clone(),
        metrics,
        give_up: give_up.clone(),
        budget: RestartBudget::new(supervision),
    };
    let (_, handle) = ractor::Actor::spawn(None, Supervisor, root).await.map_err(StartError::Spawn)?;
    let deadline = tokio::time::Instant::now() + crate::rpc::CALL_TIMEOUT;
    while !children.iter().all(|c| c.current().is_some()) {
        if tokio::time::Instant::now() >= deadline {
            return Err(StartError::Attach);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
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
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_spawn_says_why_once() {
        let error = StartError::Spawn(SpawnErr::ActorAlreadyStarted);
        assert!(std::error::Error::source(&error).is_none(), "the cause is in the message, not also a source");
        let cause = SpawnErr::ActorAlreadyStarted.to_string();
        assert_eq!(anyhow::Error::new(error).to_string().matches(&cause).count(), 1);
    }
}
