//! HTTP workers: threads each running an actix system that serves the
//! sockets it accepts: WebSocket and SSE connections as Herald's own tasks,
//! everything else with actix-http and the actix-web app.
//!
//! actix-web's `HttpServer` would own accepting too; Herald's workers accept
//! themselves (see [`super::acceptor`]), each from the same listening
//! socket. A worker also runs the connections of the sockets it upgraded:
//! each worker's runtime is single-threaded, so a connection lives on one
//! thread, the one that accepted it.

use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::thread::JoinHandle;

use std::time::Duration;

use actix_http::{HttpService, Protocol};
use actix_service::{map_config, Service, ServiceFactory};
use actix_web::dev::AppConfig;
use actix_web::{web, App};
use tokio::sync::oneshot;

use super::acceptor::Listening;
use crate::node::Node;
use crate::transport::{self, handshake, replay::Replay};

/// The running workers, and what tells each to stop.
pub(super) struct Workers {
    stops: Vec<oneshot::Sender<()>>,
    threads: Vec<JoinHandle<()>>,
}

impl Workers {
    /// Starts `count` worker threads accepting from the listening socket
    /// `listener`, which must stay open until [`Self::stop`] returns.
    pub(super) fn start(count: usize, node: &Arc<Node>, listener: RawFd) -> std::io::Result<Self> {
        let mut workers = Self { stops: Vec::new(), threads: Vec::new() };
        let (ready_tx, ready) = std::sync::mpsc::channel();
        for i in 0..count.max(1) {
            let (tx, rx) = oneshot::channel();
            let node = node.clone();
            let ready_tx = ready_tx.clone();
            let thread = std::thread::Builder::new()
                .name(format!("herald-http-{i}"))
                .spawn(move || actix_web::rt::System::new().block_on(serve(listener, rx, node, ready_tx)))?;
            workers.stops.push(tx);
            workers.threads.push(thread);
        }
        // Every worker holds its runtime's descriptors before the node
        // measures what the file limit leaves for connections.
        for _ in 0..workers.threads.len() {
            let _ = ready.recv_timeout(Duration::from_secs(5));
        }
        Ok(workers)
    }

    /// Stops every worker; their open connections end with them.
    pub(super) fn stop(self) {
        drop(self.stops);
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

/// One worker: builds the HTTP service, then accepts and serves sockets
/// until told to stop: each one's first request is read by
/// [`handshake::Handshaking`], which keeps `/ws` and `/sse` and hands the
/// rest to actix-http.
async fn serve(listener: RawFd, stop: oneshot::Receiver<()>, node: Arc<Node>, ready: std::sync::mpsc::Sender<()>) {
    let data = web::Data::from(node.clone());
    let fault_injection = node.services.config.debug.fault_injection;
    let demo = node.services.config.demo.enabled;
    let socketio = node.services.config.socketio.enabled;
    let request_timeout = Duration::from_millis(node.services.config.server.handshake_timeout_ms);
    let services = web::Data::from(node.services.clone());
    let link = web::Data::new(node.link.clone());
    let app = App::new().app_data(data).app_data(services).app_data(link).configure(|cfg| transport::http::routes(cfg, fault_injection, demo, socketio));
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
    if let Err(error) = crate::connection::reactor::Reactor::start(crate::connection::timer_grid(&node.services.config)) {
        tracing::error!(%error, "could not start the connections' loop");
        return;
    }
    let http_node = node.clone();
    handshake::set_http_handoff(Rc::new(move |replay, peer| {
        let service = service.clone();
        let guard = http_node.socket_opened();
        actix_web::rt::spawn(async move {
            let _guard = guard;
            if let Err(error) = service.call((replay, Protocol::Http1, peer)).await {
                tracing::debug!(?error, "http connection ended with an error");
            }
        });
    }));
    // Everything a socket may need is in place: accept.
    if let Err(error) = Listening::start(listener, &node) {
        tracing::error!(%error, "could not listen on this worker");
        return;
    }
    let _ = ready.send(());
    let _ = stop.await;
    // The worker is stopping: its connections and its HTTP service go now,
    // inside its runtime, not with the thread's locals.
    handshake::clear_http_handoff();
    crate::connection::reactor::Reactor::stop();
}
