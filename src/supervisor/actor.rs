//! [`Actor`]: what every supervised actor implements, and [`Runner`], the
//! one ractor actor that runs any of them.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;

use ractor::{ActorCell, ActorId, ActorProcessingErr, ActorRef, SpawnErr};

use super::Mailbox;
use crate::metrics::ActorKind;
use crate::rpc::{self, CallError};

/// Why an actor failed: its supervisor logs it, counts it and decides.
pub(crate) type Failure = ActorProcessingErr;

/// An actor: typed messages, the state only it changes, and how it handles
/// one message. Every actor of a node implements it: connections, rooms,
/// room registry shards, the presence registry and the cluster link.
///
/// Callers never hold the actor: they hold a handle type of its own
/// (`Outbox`, `RoomHandle`, `RoomRegistry`, `Presence`, `LinkHandle`) that
/// queues messages for it and never reads its state. What differs between
/// kinds is only who runs the actor, one message at a time:
///
/// - a [`Supervised`] actor's messages wait in its [`Mailbox`], and a
///   [`Runner`] (or, for a room, its shard's runner) takes them;
/// - a connection's (`connection::core::Connection`) wait in its outbox,
///   and the worker loop that owns its socket takes them as it polls it.
pub(crate) trait Actor: 'static {
    type Msg: 'static;

    /// Which actor this is, in logs and the `actor` label of metrics.
    const KIND: ActorKind;

    /// Handles one message. An error or a panic fails the actor and loses
    /// this message only; what happens next is its supervisor's choice (a
    /// [`Supervised`] actor is started again over the same state, a
    /// connection is closed with 1011).
    fn handle(&mut self, msg: Self::Msg) -> Result<(), Failure>;
}

/// An actor in a cell: the value implementing it is an `Arc` of a cell
/// holding the [`Mailbox`] and the state, shared by the actor's handles and
/// by every run of it, so the queue and the state survive a restart.
pub(crate) trait Supervised: Actor<Msg: Send> + Clone + Send + Sync {
    /// The actor's queue.
    fn mailbox(&self) -> &Mailbox<Self::Msg>;

    /// Runs each time a run of the actor starts: the first, and every
    /// restart after a failure.
    fn started(&mut self) {}
}

/// What a [`Runner`] is woken with: "your mailbox has messages". The
/// messages themselves wait in the mailbox, typed.
#[derive(Debug)]
pub(crate) struct Wake;

/// Runs a [`Supervised`] actor as a ractor actor: attaches to its mailbox when it
/// starts, and handles a turn of messages each time it is woken.
pub(crate) struct Runner<A>(PhantomData<fn() -> A>);

impl<A> Default for Runner<A> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<A: Supervised> ractor::Actor for Runner<A> {
    type Msg = Wake;
    type State = A;
    type Arguments = A;

    async fn pre_start(&self, _: ActorRef<Wake>, mut actor: A) -> Result<A, ActorProcessingErr> {
        actor.started();
        Ok(actor)
    }

    async fn post_start(&self, myself: ActorRef<Wake>, actor: &mut A) -> Result<(), ActorProcessingErr> {
        actor.mailbox().attach(myself);
        Ok(())
    }

    async fn handle(&self, _: ActorRef<Wake>, _: Wake, actor: &mut A) -> Result<(), ActorProcessingErr> {
        let cell = actor.clone();
        let mut turn = cell.mailbox().turn();
        while let Some(msg) = turn.next() {
            actor.handle(msg)?;
        }
        Ok(())
    }
}

/// A child of the root supervisor, whatever actor it runs.
pub(crate) trait Child: Send + Sync + 'static {
    fn kind(&self) -> ActorKind;

    /// The run of the actor now attached to its mailbox.
    fn current(&self) -> Option<ActorId>;

    /// Starts a run of the actor, linked to `supervisor`.
    fn spawn(&self, supervisor: ActorCell) -> Pin<Box<dyn Future<Output = Result<(), SpawnErr>> + Send + '_>>;
}

impl<A: Supervised> Child for A {
    fn kind(&self) -> ActorKind {
        A::KIND
    }

    fn current(&self) -> Option<ActorId> {
        self.mailbox().actor()
    }

    fn spawn(&self, supervisor: ActorCell) -> Pin<Box<dyn Future<Output = Result<(), SpawnErr>> + Send + '_>> {
        Box::pin(async move {
            ractor::Actor::spawn_linked(None, Runner::<A>::default(), self.clone(), supervisor).await?;
            Ok(())
        })
    }
}

/// Queues the question `build` makes for the actor behind `mailbox` and
/// waits for the answer, at most [`rpc::CALL_TIMEOUT`]; an actor being
/// restarted answers once it is back.
pub(crate) fn ask<M, T: Send + 'static>(
    mailbox: &Mailbox<M>,
    build: impl FnOnce(ractor::RpcReplyPort<T>) -> M,
) -> impl Future<Output = Result<T, CallError>> + 'static {
    let (tx, rx) = tokio::sync::oneshot::channel();
    mailbox.send(build(tx.into()));
    rpc::answer(rx)
}
