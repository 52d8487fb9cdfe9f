//! Each worker's connections, driven by one loop: the worker's own epoll
//! instance and a table of connection state machines.
//!
//! A tokio task and a tokio-registered socket per connection would cost
//! about 640 bytes before the connection holds anything of its own (the
//! task cell and the socket's readiness record are each padded to 128-byte
//! cache lines). Here a connection is one boxed [`Task`](super::task::Task) in its worker's
//! table, and its socket one entry in the worker's epoll set; the epoll
//! descriptor itself is the one thing registered with tokio.
//!
//! The loop wakes when the epoll set has events (it then records each
//! socket's readiness and polls its connection) or when a connection was
//! woken from elsewhere: its outbox (a frame queued, a close asked for) or
//! an answer it waits for. A connection's waker is its outbox, which knows
//! its worker and its place in the table; a wake puts that place on the
//! worker's queue once, and the loop polls it. It also wakes for timers:
//! an entry asks to be polled after a while ([`Reactor::poll_again_after`]),
//! and requests are kept by tick, rounded up to the worker's grid, so every
//! timer of a tick (with the defaults, a second's worth of heartbeats) runs
//! in one wake-up.
//!
//! The table holds more than connections: the listening socket (each
//! worker accepts from it) and sockets still in their handshake are entries
//! too. A handshake that becomes a connection hands its place, and its
//! socket's registration, to the connection ([`Reactor::succeed`]).

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use tokio::io::unix::AsyncFd;
use tokio::sync::Notify;

use crate::delivery::{Outbox, Place, Wakeups};

/// Milliseconds since the process started, for deadlines.
fn now_ms() -> u64 {
    super::rate::now_us() / 1000
}

/// What a connection's socket is watched for: edge-triggered.
const SOCKET_EVENTS: u32 = (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32;

/// Epoll events taken at once.
const EVENTS: usize = 256;

/// How often a worker that was busy gives freed memory back ([`crate::memory`]).
const SETTLE: std::time::Duration = std::time::Duration::from_secs(1);

/// Rounds of work in a second below which a worker counts as quiet: under
/// steady load memory is reused, not given back.
const QUIET_ROUNDS: u32 = 100;

/// A connection as its worker's loop drives it.
pub(crate) trait Driven {
    /// Records readiness the socket reported: what may be read or written,
    /// and whether the peer has hung up (so reading goes on to the end).
    fn ready(&mut self, readiness: Readiness);
    /// Advances the connection; `Ready` once it has ended.
    fn drive(&mut self, cx: &mut Context<'_>) -> Poll<()>;
    /// The connection's outbox, its waker; `None` for a socket that is
    /// polled only when its socket or its deadline says so.
    fn outbox(&self) -> Option<&Outbox>;
}

/// What an epoll event said of a socket.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Readiness {
    pub readable: bool,
    pub writable: bool,
    pub hangup: bool,
}

impl Readiness {
    fn of(events: u32) -> Self {
        let flags = events as libc::c_int;
        let hangup = flags & (libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) != 0;
        Self {
            readable: hangup || flags & libc::EPOLLIN != 0,
            writable: flags & (libc::EPOLLOUT | libc::EPOLLHUP | libc::EPOLLERR) != 0,
            hangup,
        }
    }
}

struct Entry {
    generation: u32,
    conn: Option<Box<dyn Driven>>,
}

/// One worker's connections.
pub(crate) struct Reactor {
    epoll: AsyncFd<OwnedFd>,
    wakeups: Arc<Wakeups>,
    table: RefCell<Vec<Entry>>,
    free: RefCell<Vec<u32>>,
    /// Places to poll at a time (ms since start, a multiple of `grid_ms`),
    /// soonest first (see [`Reactor::poll_after`]).
    timers: RefCell<BTreeMap<u64, Vec<Place>>>,
    /// Deadlines are rounded up to a multiple of this, so that connections
    /// whose timers come within it are polled in one wake-up.
    grid_ms: u64,
    /// Tells the loop a sooner deadline was added.
    timer: Notify,
    /// The entry being polled.
    polling: Cell<Option<Place>>,
    /// What takes the place of the entry being polled when it ends.
    successor: Cell<Option<Box<dyn Driven>>>,
}

thread_local! {
    static CURRENT: RefCell<Option<Rc<Reactor>>> = const { RefCell::new(None) };
}

impl Reactor {
    /// Creates this worker's reactor and starts its loop (inside the
    /// worker's runtime). Deadlines are kept to within `grid`: timers that
    /// fall due within it of each other are run in one wake-up.
    pub(crate) fn start(grid: std::time::Duration) -> std::io::Result<()> {
        // SAFETY: epoll_create1 returns a new descriptor or -1.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and is owned by nothing else, and the
        // `OwnedFd` keeps it open for as long as the registration lives.
        let epoll = unsafe { AsyncFd::register(OwnedFd::from_raw_fd(fd)) }.map_err(std::io::Error::from)?;
        let reactor = Rc::new(Reactor {
            epoll,
            wakeups: Arc::new(Wakeups::default()),
            table: RefCell::new(Vec::new()),
            free: RefCell::new(Vec::new()),
            timers: RefCell::new(BTreeMap::new()),
            grid_ms: (grid.as_millis() as u64).max(1),
            timer: Notify::new(),
            polling: Cell::new(None),
            successor: Cell::new(None),
        });
        CURRENT.with(|current| *current.borrow_mut() = Some(reactor.clone()));
        tokio::task::spawn_local(async move { reactor.run().await });
        Ok(())
    }

    /// Drops this worker's connections (the worker is stopping), inside its
    /// runtime rather than with the thread's locals.
    pub(crate) fn stop() {
        let Some(reactor) = CURRENT.with(|current| current.borrow_mut().take()) else { return };
        let entries: Vec<Entry> = std::mem::take(&mut *reactor.table.borrow_mut());
        drop(entries);
    }

    fn current() -> std::io::Result<Rc<Reactor>> {
        CURRENT.with(|current| current.borrow().clone()).ok_or_else(|| std::io::Error::other("no reactor on this thread"))
    }

    /// Hands `conn` over `fd` to this worker's loop and polls it once.
    pub(crate) fn adopt(fd: RawFd, conn: Box<dyn Driven>) -> std::io::Result<Place> {
        Self::current()?.insert(fd, conn, libc::EPOLL_CTL_ADD, SOCKET_EVENTS)
    }

    /// Hands `conn`, which has no socket yet, to this worker's loop and
    /// polls it once: it is polled when woken and when its timers say.
    pub(crate) fn spawn(conn: Box<dyn Driven>) -> std::io::Result<Place> {
        Self::current()?.insert(-1, conn, 0, 0)
    }

    /// Watches `fd` as the socket of the entry being polled now.
    pub(crate) fn watch(fd: RawFd) -> std::io::Result<()> {
        let reactor = Self::current()?;
        let place = reactor.polling.get().ok_or_else(|| std::io::Error::other("no entry is being polled"))?;
        let mut event = libc::epoll_event { events: SOCKET_EVENTS, u64: place.pack() };
        // SAFETY: both descriptors are open; `event` is valid for the call.
        if unsafe { libc::epoll_ctl(reactor.epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut event) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Hands `conn`, the driver of the listening socket `fd`, to this
    /// worker's loop. Every worker listens on the same socket; a connection
    /// wakes one of them.
    pub(crate) fn listen(fd: RawFd, conn: Box<dyn Driven>) -> std::io::Result<Place> {
        let events = libc::EPOLLIN | libc::EPOLLET | libc::EPOLLEXCLUSIVE;
        Self::current()?.insert(fd, conn, libc::EPOLL_CTL_ADD, events as u32)
    }

    /// Has the loop poll the entry it is polling now again, once the other
    /// work already queued has run.
    pub(crate) fn poll_again_now() {
        if let Ok(reactor) = Self::current() {
            if let Some(place) = reactor.polling.get() {
                reactor.wakeups.wake(place);
            }
        }
    }

    /// Has `conn` take the place of the entry being polled once that one
    /// ends (a socket whose handshake becomes a connection): the socket's
    /// registration and its events carry over, and `conn` is polled at once.
    pub(crate) fn succeed(conn: Box<dyn Driven>) -> std::io::Result<()> {
        let reactor = Self::current()?;
        if reactor.polling.get().is_none() {
            return Err(std::io::Error::other("no entry is being polled"));
        }
        reactor.successor.replace(Some(conn));
        Ok(())
    }

    /// Has the loop poll the entry it is polling now again after `wait`,
    /// whatever its socket does.
    pub(crate) fn poll_again_after(wait: std::time::Duration) {
        if let Ok(reactor) = Self::current() {
            if let Some(place) = reactor.polling.get() {
                reactor.poll_at(place, wait);
            }
        }
    }

    /// Has the loop poll `place` after `wait`, whatever its socket does.
    pub(crate) fn poll_after(place: Place, wait: std::time::Duration) {
        if let Ok(reactor) = Self::current() {
            reactor.poll_at(place, wait);
        }
    }

    fn poll_at(&self, place: Place, wait: std::time::Duration) {
        let grid = self.grid_ms;
        let at = (now_ms() + wait.as_millis() as u64).div_ceil(grid) * grid;
        let mut timers = self.timers.borrow_mut();
        let sooner = timers.first_key_value().is_none_or(|(&first, _)| at < first);
        timers.entry(at).or_default().push(place);
        if sooner {
            self.timer.notify_one();
        }
    }

    /// Takes `fd` out of this worker's epoll set (its owner is handing it on).
    pub(crate) fn forget(fd: RawFd) {
        if let Ok(reactor) = Self::current() {
            // SAFETY: both descriptors are open; a null event is allowed for DEL.
            unsafe { libc::epoll_ctl(reactor.epoll.as_raw_fd(), libc::EPOLL_CTL_DEL, fd, std::ptr::null_mut()) };
        }
    }

    fn insert(&self, fd: RawFd, conn: Box<dyn Driven>, op: libc::c_int, events: u32) -> std::io::Result<Place> {
        let place = {
            let mut table = self.table.borrow_mut();
            match self.free.borrow_mut().pop() {
                Some(slot) => {
                    let entry = &mut table[slot as usize];
                    entry.generation = entry.generation.wrapping_add(1);
                    entry.conn = Some(conn);
                    Place { slot, generation: entry.generation }
                }
                None => {
                    table.push(Entry { generation: 0, conn: Some(conn) });
                    Place { slot: (table.len() - 1) as u32, generation: 0 }
                }
            }
        };
        if let Some(outbox) = self.table.borrow()[place.slot as usize].conn.as_ref().and_then(|c| c.outbox()) {
            outbox.attach(self.wakeups.clone(), place);
        }
        let mut event = libc::epoll_event { events, u64: place.pack() };
        // SAFETY: both descriptors are open; `event` is valid for the call.
        if fd >= 0 && unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), op, fd, &mut event) } != 0 {
            let error = std::io::Error::last_os_error();
            self.remove(place);
            return Err(error);
        }
        self.poll(place);
        Ok(place)
    }

    fn remove(&self, place: Place) {
        let conn = {
            let mut table = self.table.borrow_mut();
            let entry = &mut table[place.slot as usize];
            entry.conn.take()
        };
        self.free.borrow_mut().push(place.slot);
        // Dropped with the table released: a connection's drop may wake others.
        drop(conn);
    }

    /// Polls the connection at `place`, if it is still there.
    fn poll(&self, place: Place) {
        let taken = {
            let mut table = self.table.borrow_mut();
            match table.get_mut(place.slot as usize) {
                Some(entry) if entry.generation == place.generation => entry.conn.take(),
                _ => None,
            }
        };
        let Some(mut conn) = taken else { return };
        let waker = match conn.outbox() {
            Some(outbox) => {
                outbox.unschedule();
                outbox.waker()
            }
            None => Waker::noop().clone(),
        };
        let mut cx = Context::from_waker(&waker);
        let outer = self.polling.replace(Some(place));
        let polled = conn.drive(&mut cx);
        self.polling.set(outer);
        let successor = self.successor.take();
        match polled {
            Poll::Ready(()) => {
                drop(conn);
                match successor {
                    Some(next) => {
                        if let Some(outbox) = next.outbox() {
                            outbox.attach(self.wakeups.clone(), place);
                        }
                        self.table.borrow_mut()[place.slot as usize].conn = Some(next);
                        self.poll(place);
                    }
                    None => self.free.borrow_mut().push(place.slot),
                }
            }
            Poll::Pending => self.table.borrow_mut()[place.slot as usize].conn = Some(conn),
        }
    }

    /// Records readiness for the connection at `place`, then polls it.
    fn ready(&self, place: Place, readiness: Readiness) {
        {
            let mut table = self.table.borrow_mut();
            match table.get_mut(place.slot as usize) {
                Some(Entry { generation, conn: Some(conn) }) if *generation == place.generation => {
                    conn.ready(readiness)
                }
                _ => return,
            }
        }
        self.poll(place);
    }

    /// Resolves when the soonest deadline comes (or a sooner one is added).
    async fn next_deadline(&self) {
        let first = self.timers.borrow().first_key_value().map(|(&at, _)| at);
        match first {
            Some(at) => {
                let wait = at.saturating_sub(now_ms());
                tokio::select! {
                    () = tokio::time::sleep(std::time::Duration::from_millis(wait)) => {}
                    () = self.timer.notified() => {}
                }
            }
            None => self.timer.notified().await,
        }
    }

    /// Polls every place whose deadline has come.
    fn poll_due(&self) {
        let now = now_ms();
        loop {
            let due = {
                let mut timers = self.timers.borrow_mut();
                match timers.first_key_value() {
                    Some((&at, _)) if at <= now => timers.pop_first().map(|(_, places)| places),
                    _ => None,
                }
            };
            let Some(places) = due else { return };
            for place in places {
                self.poll(place);
            }
        }
    }

    async fn run(self: Rc<Self>) {
        let mut events: Vec<libc::epoll_event> = vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS];
        let mut woken = Vec::new();
        let mut settle = tokio::time::interval(SETTLE);
        settle.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Rounds of work since the last tick, and whether any came since
        // memory was last settled: it is settled once things quiet down.
        let (mut rounds, mut dirty) = (0u32, false);
        loop {
            tokio::select! {
                biased;
                _ = settle.tick() => {
                    dirty |= rounds > 0;
                    if dirty && rounds < QUIET_ROUNDS {
                        crate::memory::settle();
                        dirty = false;
                    }
                    rounds = 0;
                    continue;
                }
                guard = self.epoll.readable() => {
                    let Ok(mut guard) = guard else { return };
                    loop {
                        // SAFETY: `events` has room for EVENTS entries; a zero timeout never blocks.
                        let n = unsafe {
                            libc::epoll_wait(self.epoll.as_raw_fd(), events.as_mut_ptr(), EVENTS as libc::c_int, 0)
                        };
                        if n <= 0 {
                            guard.clear_ready();
                            break;
                        }
                        for event in &events[..n as usize] {
                            self.ready(Place::unpack(event.u64), Readiness::of(event.events));
                        }
                        if (n as usize) < EVENTS {
                            guard.clear_ready();
                            break;
                        }
                    }
                }
                () = self.wakeups.notified() => {}
                () = self.next_deadline() => self.poll_due(),
            }
            rounds = rounds.saturating_add(1);
            self.wakeups.take(&mut woken);
            for place in woken.drain(..) {
                self.poll(place);
            }
            tokio::task::yield_now().await;
        }
    }
}
