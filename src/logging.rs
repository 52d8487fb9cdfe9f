//! Structured logs with `tracing`, written to stderr as text or JSON
//! (`log.format`) and filtered by `log.level` (or `RUST_LOG`, when set).
//!
//! What is logged where: start-up, shutdown, cluster changes and errors at
//! `info` and above; one line per connection lifecycle event (opened,
//! authenticated, closing with its code, closed) at `debug`; nothing per
//! message above `trace`, so a busy node's log stays readable at `info`.

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// The filter `config` asks for; `RUST_LOG`, when set and valid, wins.
pub fn filter(config: &LogConfig) -> EnvFilter {
    match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.trim().is_empty() => EnvFilter::builder().parse(&directives),
        _ => EnvFilter::builder().parse(&config.level),
    }
    .unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Installs the process-wide subscriber. Only the first call in a process takes effect.
pub fn init(config: &LogConfig) {
    let builder = tracing_subscriber::fmt().with_env_filter(filter(config)).with_writer(std::io::stderr);
    let _ = match config.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).with_span_list(false).try_init(),
    };
}
