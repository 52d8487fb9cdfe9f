//! How a connection's worker loop is reached from other threads: the place
//! of the connection in the worker's table, queued for the loop to poll.

use parking_lot::Mutex;
use tokio::sync::Notify;

/// Where a connection sits in its worker's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Place {
    pub slot: u32,
    pub generation: u32,
}

impl Place {
    pub(crate) fn pack(self) -> u64 {
        u64::from(self.slot) << 32 | u64::from(self.generation)
    }

    pub(crate) fn unpack(data: u64) -> Self {
        Self { slot: (data >> 32) as u32, generation: data as u32 }
    }
}

/// What other threads reach a worker's loop through: places to poll.
#[derive(Default)]
pub(crate) struct Wakeups {
    queue: Mutex<Vec<Place>>,
    notify: Notify,
}

impl Wakeups {
    /// Has the loop poll the connection at `place`.
    pub(crate) fn wake(&self, place: Place) {
        let mut queue = self.queue.lock();
        queue.push(place);
        if queue.len() == 1 {
            drop(queue);
            self.notify.notify_one();
        }
    }

    /// Waits until a place is queued.
    pub(crate) async fn notified(&self) {
        self.notify.notified().await;
    }

    /// Moves the queued places into `into` (empty), leaving its buffer here.
    pub(crate) fn take(&self, into: &mut Vec<Place>) {
        std::mem::swap(into, &mut *self.queue.lock());
    }
}
