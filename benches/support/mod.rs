//! What the benches share: the supervision tree started the way `Server::bind`
//! starts it, on a multi-threaded tokio runtime of one thread per core.

use std::sync::Arc;
use std::thread::available_parallelism;

use herald::config::HistoryConfig;
use herald::metrics::Metrics;
use herald::rooms::Archive;
use herald::server::tree::{self, Tree};

pub fn cores() -> usize {
    available_parallelism().map_or(1, |n| n.get())
}

/// The actors' runtime and the tree running on it, rooms keeping history
/// as `history` says; the runtime must outlive every call into the tree.
#[allow(dead_code)]
pub fn start_tree() -> (tokio::runtime::Runtime, Tree) {
    start_tree_with(HistoryConfig::default())
}

pub fn start_tree_with(history: HistoryConfig) -> (tokio::runtime::Runtime, Tree) {
    let cores = cores();
    let actors = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let metrics = Arc::new(Metrics::new());
    let archive = Arc::new(Archive::new(history, metrics.clone()));
    let tree = actors
        .block_on(tree::start(tree::RoomSetup::new(cores * 8, usize::MAX, archive), metrics, &Default::default(), Arc::new(|_| {}), None))
        .expect("the tree starts");
    (actors, tree)
}
