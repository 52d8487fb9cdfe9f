//! [`Mailbox`]: the queue of a supervised actor, kept beside its state so it
//! outlives the actor.
//!
//! Senders push a message and wake the actor's runner with a [`Wake`]
//! (at most one wake is in flight: the `scheduled` flag). A mailbox with no
//! actor of its own (a room's, run by its shard) leaves the wake to whoever
//! pushed: [`Mailbox::push`] says when one is due. The actor takes
//! messages one at a time, so when it panics only the message in hand is
//! lost; everything behind it waits in the queue for the actor its
//! supervisor starts next, which drains it as soon as it attaches. Handles
//! never see a stale `ActorRef`: they only ever touch the mailbox.
//!
//! A mailbox made with [`Mailbox::counted`] keeps its length in a gauge
//! shared by every actor of its kind (`herald_actor_mailbox_backlog`).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::{Mutex, RwLock};
use prometheus::IntGauge;
use ractor::{ActorId, ActorRef};

use super::actor::Wake;

/// Messages an actor handles per turn before it lets others run.
const BATCH: usize = 256;

/// A supervised actor's queue, and the actor now draining it.
pub(crate) struct Mailbox<M> {
    queue: Mutex<VecDeque<M>>,
    /// Whether a wake is on its way to the actor (or the actor is down and
    /// the next one will drain on attach).
    scheduled: AtomicBool,
    actor: RwLock<Option<ActorRef<Wake>>>,
    /// Messages waiting, summed over the mailboxes of one kind of actor.
    backlog: Option<IntGauge>,
}

impl<M> Default for Mailbox<M> {
    fn default() -> Self {
        Self::with_backlog(None)
    }
}

impl<M> Drop for Mailbox<M> {
    fn drop(&mut self) {
        if let Some(backlog) = &self.backlog {
            backlog.sub(self.queue.get_mut().len() as i64);
        }
    }
}

impl<M> Mailbox<M> {
    /// A mailbox whose waiting messages count in `backlog`.
    pub(crate) fn counted(backlog: IntGauge) -> Self {
        Self::with_backlog(Some(backlog))
    }

    fn with_backlog(backlog: Option<IntGauge>) -> Self {
        Self { queue: Mutex::new(VecDeque::new()), scheduled: AtomicBool::new(false), actor: RwLock::new(None), backlog }
    }

    /// Queues `msg` for the actor, whichever actor that is when it runs.
    pub(crate) fn send(&self, msg: M) {
        self.push(msg);
    }

    /// Queues `msg` and wakes the actor; true when this call scheduled a
    /// turn (none was due), which a mailbox without an actor must then
    /// have run.
    pub(crate) fn push(&self, msg: M) -> bool {
        self.queue.lock().push_back(msg);
        if let Some(backlog) = &self.backlog {
            backlog.inc();
        }
        self.wake()
    }

    /// Schedules a turn unless one is due; true when this call did.
    fn wake(&self) -> bool {
        if self.scheduled.swap(true, Ordering::AcqRel) {
            return false;
        }
        if let Some(actor) = self.actor.read().as_ref() {
            // A dead actor refuses the wake; its successor drains on attach.
            let _ = actor.cast(Wake);
        }
        true
    }

    /// Forgets any turn that was due and schedules one if messages wait:
    /// for a runner that lost the turn it had in hand. True when one is due.
    pub(crate) fn reschedule(&self) -> bool {
        self.scheduled.store(false, Ordering::Release);
        !self.queue.lock().is_empty() && self.wake()
    }

    /// Called by a (re)started actor: it drains the mailbox from now on,
    /// starting with whatever waited while no actor ran.
    pub(crate) fn attach(&self, actor: ActorRef<Wake>) {
        *self.actor.write() = Some(actor);
        self.scheduled.store(false, Ordering::Release);
        self.wake();
    }

    /// The actor draining the mailbox now.
    pub(crate) fn actor(&self) -> Option<ActorId> {
        self.actor.read().as_ref().map(|a| a.get_id())
    }

    /// How many messages the queue has room for without allocating.
    #[cfg(test)]
    pub(crate) fn buffered(&self) -> usize {
        self.queue.lock().capacity()
    }

    /// One turn of the actor: up to [`BATCH`] messages, each taken out of the
    /// queue before it is handled. Use as
    /// `let mut turn = mailbox.turn(); while let Some(msg) = turn.next() { .. }`.
    pub(crate) fn turn(&self) -> Turn<'_, M> {
        self.scheduled.store(false, Ordering::Release);
        Turn { mailbox: self, left: BATCH, rescheduled: false }
    }
}

/// The messages of one turn; see [`Mailbox::turn`].
pub(crate) struct Turn<'a, M> {
    mailbox: &'a Mailbox<M>,
    left: usize,
    rescheduled: bool,
}

impl<M> Turn<'_, M> {
    /// The next message, or `None` when the queue is empty or the turn is
    /// over (then another turn is scheduled).
    #[allow(clippy::should_implement_trait)]
    pub(crate) fn next(&mut self) -> Option<M> {
        if self.left == 0 {
            self.rescheduled |= self.mailbox.wake();
            return None;
        }
        self.left -= 1;
        let msg = self.mailbox.queue.lock().pop_front();
        if let (Some(backlog), Some(_)) = (&self.mailbox.backlog, &msg) {
            backlog.dec();
        }
        msg
    }

    /// Frees the queue's buffer if the turn left it empty: for mailboxes
    /// that are idle far more often than not, like a room's.
    pub(crate) fn release(&self) {
        let mut queue = self.mailbox.queue.lock();
        if queue.is_empty() {
            *queue = VecDeque::new();
        }
    }

    /// Whether the turn ended on its batch with messages left and scheduled
    /// the next turn itself (see [`Mailbox::push`]).
    pub(crate) fn rescheduled(&self) -> bool {
        self.rescheduled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_wait_for_an_actor_and_keep_their_order() {
        let mailbox = Mailbox::default();
        for n in 0..3 {
            mailbox.send(n);
        }
        let mut turn = mailbox.turn();
        let got: Vec<i32> = std::iter::from_fn(|| turn.next()).collect();
        assert_eq!(got, [0, 1, 2]);
    }

    #[test]
    fn a_counted_mailbox_keeps_its_length_in_the_gauge() {
        let backlog = IntGauge::new("backlog", "test").unwrap();
        let mailbox = Mailbox::counted(backlog.clone());
        for n in 0..3 {
            mailbox.send(n);
        }
        assert_eq!(backlog.get(), 3);
        assert_eq!(mailbox.turn().next(), Some(0));
        assert_eq!(backlog.get(), 2);
        drop(mailbox);
        assert_eq!(backlog.get(), 0, "what a dropped mailbox held is no longer waiting");
    }

    #[test]
    fn a_turn_stops_after_its_batch_and_leaves_the_rest_queued() {
        let mailbox = Mailbox::default();
        for n in 0..(BATCH + 10) {
            mailbox.send(n);
        }
        let mut turn = mailbox.turn();
        assert_eq!(std::iter::from_fn(|| turn.next()).count(), BATCH);
        assert!(mailbox.scheduled.load(Ordering::Acquire), "another turn is scheduled");
        assert!(turn.rescheduled());
        let mut turn = mailbox.turn();
        assert_eq!(std::iter::from_fn(|| turn.next()).collect::<Vec<_>>(), (BATCH..BATCH + 10).collect::<Vec<_>>());
    }
}
