//! [`Actor`]: what every supervised actor implements, and [`Runner`], the
//! one ractor actor that runs any of them.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;

use ractor::{ActorCell, ActorId, ActorProcessingErr, ActorRef, SpawnErr};

use super::Mailbox;
use crate::metrics::ActorKind;
use crate::rpc::{self, CallError};

/// Why an actor failed: its supervisor logs it, counts it and decides.
pub(crate) type Failure = ActorProcessingErr;

/// A supervised actor: a queue of typed messages, the state only it
/// changes, and how it handles one message.
///
/// The value implementing it is the actor's cell: it outlives any one run
/// of the actor, so the queue and the state survive a restart. Callers hold
/// a handle type of the actor's own (`Presence`, `RoomRegistry`, ...) that
/// pushes messages into [`Actor::mailbox`] and never reads the state.
pub(crate) trait Actor: Send + Sync + Sized + 'static {
    type Msg: Send + 'static;

    /// Which actor this is, in logs and the `actor` label of metrics.
    const KIND: ActorKind;

    /// The actor's queue.
    fn mailbox(&self) -> &Mailbox<Self::Msg>;

    /// Runs each time a run of the actor starts: the first, and every
    /// restart after a failure.
    fn started(self: &Arc<Self>) {}

    /// Handles one message. An error or a panic fails the actor: only this
    /// message is lost, and its supervisor starts the next run over the same
    /// state, which takes the messages that waited.
    fn handle(self: &Arc<Self>, msg: Self::Msg) -> Result<(), Failure>;
}

/// What a [`Runner`] is woken with: "your mailbox has messages". The
/// messages themselves wait in the mailbox, typed.
#[derive(Debug)]
pub(crate) struct Wake;

/// Runs an [`Actor`] as a ractor actor: attaches to its mailbox when it
/// starts, and handles a turn of messages each time it is woken.
pub(crate) struct Runner<A>(PhantomData<fn() -> A>);

impl<A> Default for Runner<A> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<A: Actor> ractor::Actor for Runner<A> {
    type Msg = Wake;
    type State = Arc<A>;
    type Arguments = Arc<A>;

    async fn pre_start(&self, _: ActorRef<Wake>, actor: Arc<A>) -> Result<Arc<A>, ActorProcessingErr> {
        actor.started();
        Ok(actor)
    }

    async fn post_start(&self, myself: ActorRef<Wake>, actor: &mut Arc<A>) -> Result<(), ActorProcessingErr> {
        actor.mailbox().attach(myself);
        Ok(())
    }

    async fn handle(&self, _: ActorRef<Wake>, _: Wake, actor: &mut Arc<A>) -> Result<(), ActorProcessingErr> {
        let mut turn = actor.mailbox().turn();
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

impl<A: Actor> Child for Arc<A> {
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
