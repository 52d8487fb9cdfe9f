//! HTTP workers: threads each running an actix system that serves the
//! sockets the acceptor hands it: WebSocket and SSE connections as Herald's
//! own tasks, everything else with actix-http and the actix-web app.
//!
//! actix-web's `HttpServer` would own accepting too; Herald accepts itself
//! (see [`super::acceptor`]) and gives each worker ready sockets. A worker
//! also runs the connection tasks of the sockets it upgraded: each worker's
//! runtime is single-threaded, so a connection lives on one thread.

use std::net::TcpStream as StdTcpStream;
use std::rc::Rc;
use std::sync::Arc;
use std::thread::JoinHandle;

use std::time::Duration;

use actix_http::{HttpService, Protocol};
use actix_service::{map_config, Service, ServiceFactory};
use actix_web::dev::AppConfig;
use actix_web::{web, App};
use tokio::sync::mpsc;

use crate::node::Node;
use crate::transport::{self, handshake, replay::Replay};

/// The running workers and the channels that feed them.
pub struct Workers {
    senders: Vec<mpsc::UnboundedSender<StdTcpStream>>,
    threads: Vec<JoinHandle<()>>,
    next: usize,
}

impl Workers {
    /// Starts `count` worker threads.
    pub fn start(count: usize, node: &Arc<Node>) -> std::io::Result<Self> {
        let mut workers = Self { senders: Vec::new(), threads: Vec::new(), next: 0 };
        let (ready_tx, ready) = std::sync::mpsc::channel();
        for i in 0..count.max(1) {
            let (tx, rx) = mpsc::unbounded_channel();
            let node = node.clone();
            let ready_tx = ready_tx.clone();
            let thread = std::thread::Builder::new()
                .name(format!("herald-http-{i}"))
                .spawn(move || actix_web::rt::System::new().block_on(serve(rx, node, ready_tx)))?;
            workers.senders.push(tx);
            workers.threads.push(thread);
        }
        // Every worker holds its runtime's descriptors before the node
        // measures what the file limit leaves for connections.
        for _ in 0..workers.threads.len() {
            let _ = ready.recv_timeout(Duration::from_secs(5));
        }
        Ok(workers)
    }

    /// Hands an accepted socket to the next worker, round robin.
    pub fn dispatch(&mut self, stream: StdTcpStream) {
        self.next = (self.next + 1) % self.senders.len();
        if self.senders[self.next].send(stream).is_err() {
            tracing::error!(worker = self.next, "an HTTP worker is gone; connection dropped");
        }
    }

    /// Stops every worker; their open connections end with them.
    pub fn stop(self) {
        drop(self.senders);
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

/// One worker: builds the HTTP service, then serves every socket it is
/// given: each one's first request is read by [`handshake::serve`], which
/// keeps `/ws` and `/sse` and hands the rest to actix-http.
async fn serve(mut sockets: mpsc::UnboundedReceiver<StdTcpStream>, node: Arc<Node>, ready: std::sync::mpsc::Sender<()>) {
    let data = web::Data::from(node.clone());
    let fault_injection = node.config.debug.fault_injection;
    let request_timeout = Duration::from_millis(node.config.server.handshake_timeout_ms);
    let app = App::new().app_data(data).configure(|cfg| transport::http::routes(cfg, fault_injection));
    let factory = HttpService::<Replay, _, _, _, _>::build()
        .client_request_timeout(request_timeout)
        .finish(map_config(app, |_| AppConfig::default()));
    let service = match factory.new_service(()).await {
        Ok(service) => Rc::new(service),
        Err(()) => {
            tracing::error!("could not build the HTTP service");
            return;
        }
    };
    let node_for_sockets = node.clone();
    if let Err(error) = crate::connection::reactor::Reactor::start() {
        tracing::error!(%error, "could not start the connections' loop");
        return;
    }
    let _ = ready.send(());
    handshake::set_http_handoff(Rc::new(move |replay, peer| {
        let service = service.clone();
        let guard = node.socket_opened();
        actix_web::rt::spawn(async move {
            let _guard = guard;
            if let Err(error) = service.call((replay, Protocol::Http1, peer)).await {
                tracing::debug!(?error, "http connection ended with an error");
            }
        });
    }));
    while let Some(stream) = sockets.recv().await {
        handshake::Handshaking::start(stream, &node_for_sockets);
    }
    // The worker is stopping: its connections and its HTTP service go now,
    // inside its runtime, not with the thread's locals.
    handshake::clear_http_handoff();
    crate::connection::reactor::Reactor::stop();
}
