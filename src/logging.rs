//! Structured logs with `tracing`, written to stderr as text or JSON
//! (`log.format`) and filtered by `log.level` (or `RUST_LOG`, when set).
//!
//! What is logged where: start-up, shutdown, cluster changes and errors at
//! `info` and above; one line per connection lifecycle event (opened,
//! authenticated, closing with its code, closed) at `debug`; nothing per
//! message above `trace`, so a busy node's log stays readable at `info`.
//!
//! Text lines are coloured only when stderr is a terminal and `NO_COLOR` is
//! unset or empty (<https://no-color.org>): a log written to a file or a
//! pipe holds no escape codes.

use std::ffi::OsStr;
use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// The filter `config` asks for; `RUST_LOG`, when set and valid, wins.
pub(crate) fn filter(config: &LogConfig) -> EnvFilter {
    match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.trim().is_empty() => EnvFilter::builder().parse(&directives),
        _ => EnvFilter::builder().parse(&config.level),
    }
    .unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Whether log lines carry colours: only on a terminal, and not when
/// `no_color` (the value of `NO_COLOR`) is set to anything but the empty string.
pub(crate) fn coloured(terminal: bool, no_color: Option<&OsStr>) -> bool {
    terminal && no_color.is_none_or(OsStr::is_empty)
}

/// Installs the process-wide subscriber. Only the first call in a process takes effect.
pub fn init(config: &LogConfig) {
    let ansi = coloured(std::io::stderr().is_terminal(), std::env::var_os("NO_COLOR").as_deref());
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter(config)).with_writer(std::io::stderr).with_ansi(ansi);
    let _ = match config.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).with_span_list(false).try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_only_on_a_terminal_without_no_color() {
        assert!(coloured(true, None));
        assert!(coloured(true, Some(OsStr::new(""))));
        assert!(!coloured(true, Some(OsStr::new("1"))));
        assert!(!coloured(false, None));
        assert!(!coloured(false, Some(OsStr::new(""))));
    }
}
