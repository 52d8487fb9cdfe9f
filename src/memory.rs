//! Giving memory back after a burst.
//!
//! Herald allocates with mimalloc (set in the binary, which also makes it
//! purge freed pages at once: `MIMALLOC_PURGE_DELAY=0` unless the environment
//! says otherwise). mimalloc keeps the pages a burst freed and returns them to
//! the OS only when the same thread allocates again after
//! `MIMALLOC_PURGE_DELAY` (1 s by default in the mimalloc Herald links). A node
//! that goes quiet after a burst (19,000 clients connecting at once, a
//! flood of API calls) would otherwise keep that memory resident for as long
//! as it stays quiet. The threads that allocate per connection and per
//! request (the workers once they quiet down, and the actors' threads
//! through [`settle_every`]) call [`settle`] about once a second, so
//! resident memory follows live memory within a second or so.
//!
//! In a process whose global allocator is not mimalloc (the tests), this
//! tidies mimalloc's own empty heap and costs nothing.

/// Returns the calling thread's free mimalloc pages to the OS.
pub(crate) fn settle() {
    // SAFETY: mi_collect has no preconditions; `false` only frees what is
    // free already, on this thread's heap.
    unsafe { libmimalloc_sys::mi_collect(false) }
}

/// How often a thread of the actors' runtime settles when it goes idle, at most.
const IDLE_SETTLE: std::time::Duration = std::time::Duration::from_millis(100);

/// Settles the calling thread's memory when it goes idle, at most every
/// [`IDLE_SETTLE`]: for the actors' runtime's `on_thread_park`. Rooms are
/// created and dropped on whichever of its threads runs their shard, and
/// a thread's freed pages go back only when that same thread collects;
/// [`settle_every`] alone reaches one thread of the runtime a second.
pub(crate) fn settle_when_idle() {
    thread_local! {
        static LAST: std::cell::Cell<Option<std::time::Instant>> = const { std::cell::Cell::new(None) };
    }
    let now = std::time::Instant::now();
    LAST.with(|last| {
        if last.get().is_none_or(|at| now.duration_since(at) >= IDLE_SETTLE) {
            last.set(Some(now));
            settle();
        }
    });
}

/// Settles memory every `period` on whichever thread of a runtime runs it, forever.
pub(crate) async fn settle_every(period: std::time::Duration) {
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        settle();
    }
}

/// Gives back most of a map's table once it is mostly empty: a `HashMap`
/// keeps the capacity of its largest moment otherwise, so a burst of
/// 100,000 rooms would cost their buckets for good. Shrinking at a quarter
/// full keeps the rehashing amortised over the removals that led to it.
pub(crate) fn shrink_sparse<K: Eq + std::hash::Hash, V, S: std::hash::BuildHasher>(
    map: &mut std::collections::HashMap<K, V, S>,
) {
    if map.capacity() > 64 && map.len() < map.capacity() / 4 {
        map.shrink_to_fit();
    }
}
