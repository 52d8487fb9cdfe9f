//! The supervision tree of a node's ractor actors, on their own multi-thread
//! runtime (see `server`).
//!
//! ```text
//! root (Supervisor)
//! ├── presence registry (PresenceRegistry)        started first: rooms report to it
//! └── room registry shards (Shard × N)            one per hash bucket of room names
//!     └── rooms (Room), created on first join, retired when empty
//! ```
//!
//! Connection actors live on the HTTP workers (actix), outside this tree; they
//! reach it through the [`crate::rooms::RoomRegistry`] and
//! [`crate::presence::Presence`] handles returned by [`start`].
//!
//! Today a failed child is logged and, for rooms, forgotten by its shard so the
//! next join starts a fresh room. Restart policies with limits per time window
//! belong to this module.

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SpawnErr, SupervisionEvent};

use crate::metrics::Metrics;
use crate::presence::{Presence, PresenceMsg, PresenceRegistry};
use crate::rooms::shard::{Shard, ShardArgs};
use crate::rooms::{RoomRegistry, ShardMsg};
use crate::rpc;

/// The handles of a started tree.
#[derive(Clone)]
pub struct Tree {
    pub root: ActorRef<SupervisorMsg>,
    pub rooms: RoomRegistry,
    pub presence: Presence,
}

/// Messages of the root supervisor.
pub enum SupervisorMsg {
    Handles(RpcReplyPort<(Vec<ActorRef<ShardMsg>>, ActorRef<PresenceMsg>)>),
}

/// What the root needs to start its children.
pub struct SupervisorArgs {
    pub shards: usize,
    pub metrics: Arc<Metrics>,
}

/// The root supervisor.
pub struct Supervisor;

pub struct SupervisorState {
    presence: ActorRef<PresenceMsg>,
    shards: Vec<ActorRef<ShardMsg>>,
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SupervisorMsg>,
        args: SupervisorArgs,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        let (presence, _) =
            Actor::spawn_linked(None, PresenceRegistry, args.metrics.clone(), myself.get_cell()).await?;
        let mut shards = Vec::with_capacity(args.shards);
        for _ in 0..args.shards.max(1) {
            let shard_args = ShardArgs { presence: Presence::new(presence.clone()), metrics: args.metrics.clone() };
            let (shard, _) = Actor::spawn_linked(None, Shard, shard_args, myself.get_cell()).await?;
            shards.push(shard);
        }
        Ok(SupervisorState { presence, shards })
    }

    async fn handle(
        &self,
        _: ActorRef<SupervisorMsg>,
        msg: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Handles(reply) => {
                let _ = reply.send((state.shards.clone(), state.presence.clone()));
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _: ActorRef<SupervisorMsg>,
        event: SupervisionEvent,
        _: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(cell, error) => {
                tracing::error!(actor = %cell.get_id(), %error, "supervised actor failed");
            }
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                tracing::warn!(actor = %cell.get_id(), ?reason, "supervised actor stopped");
            }
            _ => {}
        }
        Ok(())
    }
}

/// Why the tree could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("could not spawn the supervision tree: {0}")]
    Spawn(#[from] SpawnErr),
    #[error("the root supervisor did not answer: {0}")]
    Root(#[from] rpc::CallError),
}

/// Starts the tree. Must run on the actors' runtime.
pub async fn start(shards: usize, metrics: Arc<Metrics>) -> Result<Tree, StartError> {
    let (root, _) = Actor::spawn(None, Supervisor, SupervisorArgs { shards, metrics }).await?;
    let (shards, presence) = rpc::call(&root, SupervisorMsg::Handles).await?;
    Ok(Tree { root, rooms: RoomRegistry::new(shards), presence: Presence::new(presence) })
}
