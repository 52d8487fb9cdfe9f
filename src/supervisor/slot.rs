//! [`ActorSlot`]: where handles find an actor that may be replaced.
//!
//! Everything that talks to a supervised actor (connections to rooms, rooms
//! to presence, the API to shards) holds its slot, not its `ActorRef`. A
//! supervisor that restarts the actor puts the new reference in the slot, so
//! no handle ever goes stale.

use parking_lot::RwLock;
use ractor::{ActorRef, MessagingErr};

/// The current reference of a supervised actor, if it has started.
pub struct ActorSlot<M> {
    actor: RwLock<Option<ActorRef<M>>>,
}

impl<M> Default for ActorSlot<M> {
    fn default() -> Self {
        Self { actor: RwLock::new(None) }
    }
}

impl<M: ractor::Message> ActorSlot<M> {
    /// The actor now in the slot.
    pub fn get(&self) -> Option<ActorRef<M>> {
        self.actor.read().clone()
    }

    /// Puts a (re)started actor in the slot.
    pub fn set(&self, actor: ActorRef<M>) {
        *self.actor.write() = Some(actor);
    }

    /// Whether `id` is the actor now in the slot.
    pub fn holds(&self, id: ractor::ActorId) -> bool {
        self.actor.read().as_ref().is_some_and(|a| a.get_id() == id)
    }

    /// Sends `msg` to the actor in the slot; gives it back when no actor is
    /// there to take it (none started yet, or the last one died and its
    /// supervisor has not replaced it yet).
    pub fn cast(&self, msg: M) -> Result<(), M> {
        let Some(actor) = self.get() else { return Err(msg) };
        match actor.cast(msg) {
            Ok(()) => Ok(()),
            Err(MessagingErr::SendErr(msg)) => Err(msg),
            Err(_) => Ok(()),
        }
    }
}
