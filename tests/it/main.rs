//! Herald's integration tests, one test binary: a module per area, and the
//! fixtures they share in [`support`] (in-process servers, `herald`,
//! `redis-server` and Prometheus processes, WebSocket and SSE clients, HTTP
//! and `/metrics`). Every fixture stops what it starts when dropped.
//!
//! The areas run side by side in one process, as threads of one test
//! harness: a test that depends on the whole process (its file limit, its
//! environment, the machine to itself) runs what it measures in a child
//! process or takes its turn behind a lock.

mod support;

mod abuse;
mod api;
mod auth;
mod backplane;
mod cli;
mod demo;
mod cluster;
mod dashboards;
mod directory;
mod fuzz;
mod history;
mod hardening;
mod k6;
mod layers;
mod lean;
mod metrics;
mod namespaces;
mod process;
mod protocol;
mod relay;
mod scripts;
mod socketio;
mod sse;
mod startup;
mod supervision;
