//! HTTP workers: threads each running an actix system that serves the
//! connections the acceptor hands it, with actix-http and the actix-web app.
//!
//! actix-web's `HttpServer` would own accepting too; Herald accepts itself
//! (see [`super::acceptor`]) and gives each worker ready sockets.

use std::net::TcpStream as StdTcpStream;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::thread::JoinHandle;

use actix_http::HttpService;
use actix_service::{map_config, Service, ServiceFactory};
use actix_web::dev::AppConfig;
use actix_web::rt::net::TcpStream;
use actix_web::{web, App};
use tokio::sync::mpsc;

use crate::connection::control::SocketFd;
use crate::node::Node;
use crate::transport;

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
        for i in 0..count.max(1) {
            let (tx, rx) = mpsc::unbounded_channel();
            let node = node.clone();
            let thread = std::thread::Builder::new()
                .name(format!("herald-http-{i}"))
                .spawn(move || actix_web::rt::System::new().block_on(serve(rx, node)))?;
            workers.senders.push(tx);
            workers.threads.push(thread);
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

/// One worker: builds the HTTP service, then serves every socket it is given.
async fn serve(mut sockets: mpsc::UnboundedReceiver<StdTcpStream>, node: Arc<Node>) {
    let data = web::Data::from(node.clone());
    let fault_injection = node.config.debug.fault_injection;
    let app = App::new().app_data(data).configure(|cfg| transport::http::routes(cfg, fault_injection));
    let factory = HttpService::build()
        .on_connect_ext(|io: &TcpStream, ext| {
            ext.insert(SocketFd(io.as_raw_fd()));
        })
        .finish(map_config(app, |_| AppConfig::default()))
        .tcp();
    let service = match factory.new_service(()).await {
        Ok(service) => Rc::new(service),
        Err(()) => {
            tracing::error!("could not build the HTTP service");
            return;
        }
    };
    while let Some(stream) = sockets.recv().await {
        let stream = match TcpStream::from_std(stream) {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(%error, "could not register an accepted socket");
                continue;
            }
        };
        let service = service.clone();
        let guard = node.socket_opened();
        actix_web::rt::spawn(async move {
            let _guard = guard;
            if let Err(error) = service.call(stream).await {
                tracing::debug!(?error, "http connection ended with an error");
            }
        });
    }
}
