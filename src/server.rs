//! Putting a node together: the actors' runtime and supervision tree, the
//! listening socket, and the actix-web HTTP server.
//!
//! Ractor actors run on a dedicated multi-thread tokio runtime created here;
//! spawned from an actix worker instead, they would live on that worker's
//! single-thread runtime and die with it. Connection actors run on the actix
//! workers and reach the tree through handles, which work from any thread.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread::available_parallelism;

use actix_web::{web, App, HttpServer};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::node::Node;
use crate::supervisor::{self, StartError};
use crate::transport;

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("could not create the actor runtime: {0}")]
    Runtime(std::io::Error),
    #[error(transparent)]
    Tree(#[from] StartError),
    #[error("could not listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
}

/// A node that is bound and whose actors run, ready to serve.
pub struct Server {
    listener: TcpListener,
    node: Arc<Node>,
    actors: tokio::runtime::Runtime,
}

fn cores() -> usize {
    available_parallelism().map_or(1, |n| n.get())
}

impl Server {
    /// Starts the actors and binds the listening socket. Call outside any async runtime.
    pub fn bind(config: Config) -> Result<Self, ServerError> {
        let actors = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cores())
            .thread_name("herald-actors")
            .enable_all()
            .build()
            .map_err(ServerError::Runtime)?;
        let metrics = Arc::new(Metrics::new());
        let tree = actors.block_on(supervisor::start(cores() * 8, metrics.clone()))?;
        let addr = format!("{}:{}", config.server.host, config.server.port);
        let listener = TcpListener::bind(&addr).map_err(|source| ServerError::Bind { addr, source })?;
        let node = Arc::new(Node::new(config, tree.rooms, tree.presence, metrics));
        Ok(Self { listener, node, actors })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// The node's shared state.
    pub fn node(&self) -> Arc<Node> {
        self.node.clone()
    }

    /// Serves until the process is told to stop. Must run inside an actix system.
    pub async fn run(self) -> std::io::Result<()> {
        let Server { listener, node, actors } = self;
        let workers = match node.config.server.workers {
            0 => cores(),
            n => n,
        };
        let data = web::Data::from(node.clone());
        tracing::info!(addr = %listener.local_addr()?, node = %node.id, workers, "herald listening");
        let result = HttpServer::new(move || App::new().app_data(data.clone()).configure(transport::http::routes))
            .workers(workers)
            .listen(listener)?
            .run()
            .await;
        node.set_ready(false);
        actors.shutdown_background();
        result
    }
}
