//! Putting a node together: the listening socket, the actors' runtime and
//! supervision tree, the HTTP workers that accept from the socket, and the
//! graceful drain. The socket is bound first, so a port already in use stops
//! start-up before any actor runs.
//!
//! ```text
//! listening socket ──accept──▶ HTTP workers (actix systems): connection actors
//!                                    │ handles
//! actors runtime (tokio, multi-thread): supervision tree, rooms, presence
//! ```
//!
//! Ractor actors run on a dedicated multi-thread tokio runtime created here;
//! spawned from an actix worker instead, they would live on that worker's
//! single-thread runtime and die with it. Connection actors run on the
//! workers and reach the tree through handles, which work from any thread.
//!
//! If the supervision tree gives up, the node drains the same way and
//! [`Server::run`] returns [`ServerError::GaveUp`] (the binary exits 70).
//!
//! Shutdown (SIGTERM, SIGINT, or [`ShutdownHandle::shutdown`]): `/readyz`
//! turns 503 and upgrades are refused at once, every connection is sent close
//! 1001, and the node stops when the last connection is gone or after
//! `server.shutdown_timeout_ms`, whichever comes first.

mod acceptor;
pub mod tree;
mod workers;

use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::thread::available_parallelism;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::cluster;
use crate::config::Config;
use crate::rooms::{Archive, Namespaces};
use crate::delivery::Registry;
use crate::metrics::Metrics;
use crate::connection::services::Services;
use crate::node::{node_id, Node};
use crate::protocol::close;
use crate::supervisor::{self, StartError};
use tree::Clustering;
use workers::Workers;

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("could not create a runtime: {0}")]
    Runtime(std::io::Error),
    #[error(transparent)]
    Tree(#[from] StartError),
    #[error("could not listen on {addr}: {error}")]
    Bind { addr: String, error: std::io::Error },
    #[error("could not start the HTTP workers: {0}")]
    Workers(std::io::Error),
    #[error("cluster: {0}")]
    Cluster(String),
    /// The supervision tree gave up; the node stopped rather than run without it.
    #[error("supervision gave up: {0}")]
    GaveUp(String),
}

/// Set when the supervision tree gives up: the node drains and stops.
#[derive(Default)]
struct Fatal {
    notify: Notify,
    reason: parking_lot::Mutex<Option<String>>,
    /// The node is stopping anyway: the tree ending now is no failure.
    stopping: std::sync::atomic::AtomicBool,
}

/// Asks a running server to drain and stop.
#[derive(Clone, Default)]
pub struct ShutdownHandle {
    notify: Arc<Notify>,
}

impl ShutdownHandle {
    pub fn shutdown(&self) {
        self.notify.notify_one();
    }
}

/// A node that is bound and whose actors run, ready to serve.
pub struct Server {
    listener: TcpListener,
    node: Arc<Node>,
    actors: tokio::runtime::Runtime,
    shutdown: ShutdownHandle,
    fatal: Arc<Fatal>,
    signals: bool,
}

fn cores() -> usize {
    available_parallelism().map_or(1, |n| n.get())
}

impl Server {
    /// Binds the listening socket, then starts the actors. Call outside any async runtime.
    ///
    /// The socket comes first: when the port is taken nothing else has
    /// started, so the bind error is all that a failed start reports (and
    /// no supervision tree is torn down after it).
    pub fn bind(mut config: Config) -> Result<Self, ServerError> {
        let addr = format!("{}:{}", config.server.host, config.server.port);
        let user_timeout = Duration::from_millis(config.heartbeat.timeout_ms);
        let listener = bind(&addr, user_timeout).map_err(|error| ServerError::Bind { addr, error })?;
        if config.demo.enabled {
            tracing::warn!("demo.enabled: /demo/ is served, and POST /demo/token signs a token for any name; turn it off outside trials");
        }
        if config.demo.enabled && config.auth.jwt_secret.is_empty() {
            // The demo signs its visitors' tokens; with no secret of its
            // own the node makes one up, which no one else knows.
            config.auth.jwt_secret = format!("{}{}", crate::ids::random_token(), crate::ids::random_token());
            tracing::info!("demo: tokens are signed with a key made for this process (auth.jwt_secret is empty)");
        }
        let actors = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cores())
            .thread_name("herald-actors")
            .on_thread_park(crate::memory::settle_when_idle)
            .enable_all()
            .build()
            .map_err(ServerError::Runtime)?;
        let metrics = Arc::new(Metrics::new());
        let fatal = Arc::new(Fatal::default());
        let give_up: supervisor::GiveUp = {
            let fatal = fatal.clone();
            Arc::new(move |reason| {
                if fatal.stopping.load(std::sync::atomic::Ordering::Acquire) {
                    return;
                }
                fatal.reason.lock().get_or_insert(reason);
                fatal.notify.notify_one();
            })
        };
        let id = node_id(&config);
        metrics.set_node(&id);
        let connections = Arc::new(Registry::default());
        let cluster = match config.cluster.enabled {
            true => Some(
                actors
                    .block_on(cluster::join(&config.cluster, id.clone(), metrics.clone()))
                    .map_err(ServerError::Cluster)?,
            ),
            false => None,
        };
        let clustering = cluster.clone().map(|cluster| Clustering { cluster, connections: connections.clone() });
        let archive = Arc::new(Archive::new(config.history.clone(), metrics.clone()));
        let rooms = tree::RoomSetup {
            shards: cores() * 8,
            max_rooms: config.limits.max_rooms,
            archive,
            namespaces: Arc::new(Namespaces::new(&config)),
        };
        let tree = actors.block_on(tree::start(
            rooms,
            metrics.clone(),
            &config.supervision,
            give_up,
            clustering,
        ))?;
        let cluster = cluster::Cluster::from(cluster);
        let services = Services::new(config, id, tree.rooms, tree.presence, metrics, connections, cluster);
        let node = Arc::new(Node::new(Arc::new(services), tree.link));
        Ok(Self { listener, node, actors, shutdown: ShutdownHandle::default(), fatal, signals: false })
    }

    /// Drains and stops on SIGTERM and SIGINT (for the binary; tests use [`Self::shutdown_handle`]).
    pub fn with_signal_handling(mut self) -> Self {
        self.signals = true;
        self
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// The node's shared state.
    pub fn node(&self) -> Arc<Node> {
        self.node.clone()
    }

    /// A handle that starts the drain.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// Serves until shut down, then drains. Blocks the calling thread.
    pub fn run(self) -> Result<(), ServerError> {
        let Server { listener, node, actors, shutdown, fatal, signals } = self;
        let workers = match node.services.config.server.workers {
            0 => cores(),
            n => n,
        };
        let main_rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ServerError::Runtime)?;
        let workers = Workers::start(workers, &node, listener.as_raw_fd()).map_err(ServerError::Workers)?;
        let settle = actors.spawn(crate::memory::settle_every(Duration::from_secs(1)));
        node.services.measure_capacity();
        log_capacity(&node);
        main_rt.block_on(async {
            tracing::info!(addr = %listener.local_addr().map_err(ServerError::Runtime)?, node = %node.services.id, "herald listening");
            tokio::select! {
                _ = shutdown.notify.notified() => {}
                _ = fatal.notify.notified() => {}
                _ = termination(signals) => {}
            }
            drain(&node).await;
            Ok::<_, ServerError>(())
        })?;
        // The workers stop with every connection, then the listening socket closes.
        workers.stop();
        drop(listener);
        settle.abort();
        fatal.stopping.store(true, std::sync::atomic::Ordering::Release);
        actors.shutdown_background();
        if let Some(reason) = fatal.reason.lock().take() {
            tracing::error!(%reason, "herald stopped: supervision gave up");
            return Err(ServerError::GaveUp(reason));
        }
        tracing::info!("herald stopped");
        Ok(())
    }
}

/// Binds with `SO_REUSEADDR` and a backlog of 4096. Accepted sockets
/// inherit `TCP_NODELAY` and `TCP_USER_TIMEOUT` (how long unacknowledged
/// data may wait before the kernel gives up on a vanished peer) from it.
fn bind(addr: &str, user_timeout: Duration) -> std::io::Result<TcpListener> {
    let addr: SocketAddr = std::net::ToSocketAddrs::to_socket_addrs(addr)?
        .next()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address"))?;
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    socket.set_tcp_user_timeout(Some(user_timeout))?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

/// Resolves on SIGTERM or SIGINT when `enabled`; never otherwise.
async fn termination(enabled: bool) {
    if !enabled {
        return std::future::pending().await;
    }
    use tokio::signal::unix::{signal, SignalKind};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: draining"),
                _ = int.recv() => tracing::info!("SIGINT: draining"),
            }
        }
        _ => {
            tracing::error!("cannot listen for signals; stop the process with SIGKILL");
            std::future::pending::<()>().await
        }
    }
}

/// How long, once every connection has closed, sockets get to flush their
/// last frames; idle keep-alive HTTP sockets are not waited for longer.
const FLUSH_GRACE: Duration = Duration::from_millis(500);

/// Refuses new connections, sends close 1001 to every open one and waits for
/// them to end, then lets their sockets flush (still answering `/readyz`
/// with 503 meanwhile), in all at most `server.shutdown_timeout_ms`.
async fn drain(node: &Node) {
    node.start_drain();
    node.services.connections.for_each(|outbox| outbox.close(close::GOING_AWAY));
    let deadline = Instant::now() + Duration::from_millis(node.services.config.server.shutdown_timeout_ms);
    while node.services.open_connections() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let flushed = deadline.min(Instant::now() + FLUSH_GRACE);
    while node.open_sockets() > 0 && Instant::now() < flushed {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let left = node.services.open_connections();
    if left > 0 {
        tracing::warn!(connections = left, "shutdown timeout: dropping the connections still open");
    }
    node.services.cluster.depart(Duration::from_secs(1)).await;
}

/// Logs the file limit and how many connections it leaves room for.
fn log_capacity(node: &Node) {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit only writes the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return;
    }
    let in_use = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
    let capacity = crate::connection::services::connection_capacity().unwrap_or(0);
    let configured = node.services.config.limits.max_connections;
    tracing::info!(
        file_limit = limit.rlim_cur,
        descriptors_in_use = in_use,
        connection_capacity = capacity,
        max_connections = node.services.max_connections(),
        "file limit allows about {capacity} connections"
    );
    if configured as u64 > capacity {
        tracing::warn!("limits.max_connections ({configured}) exceeds what the file limit allows ({capacity})");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_error_printed_with_its_chain_names_its_cause_once() {
        let error = ServerError::Bind { addr: "127.0.0.1:8080".into(), error: std::io::Error::from_raw_os_error(libc::EADDRINUSE) };
        let cause = std::io::Error::from_raw_os_error(libc::EADDRINUSE).to_string();
        // How the binary prints it: the message, then each source.
        let printed = format!("{:#}", anyhow::Error::new(error).context("starting"));
        assert_eq!(printed, format!("starting: could not listen on 127.0.0.1:8080: {cause}"));
    }
}
