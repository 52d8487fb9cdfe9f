//! The `herald` binary: parses the command line, loads the config, sets up
//! logging and runs a node.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use herald::{Config, Server};

/// The exit status when the supervision tree gives up (EX_SOFTWARE).
const EXIT_GAVE_UP: u8 = 70;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How Herald runs mimalloc: resident memory follows live memory.
///
/// A burst of work (thousands of pipelined HTTP requests, a fan-out spike)
/// allocates megabytes for a moment. With mimalloc's defaults the pages it
/// frees stay resident: they are purged only after `purge_delay` (1 s) and
/// only when the allocator next runs in that thread, so a server that goes
/// quiet after a burst keeps it all; and its arenas ask for transparent huge
/// pages, so what stays resident is counted in 2 MiB pages, which the kernel
/// collapses again after a purge. Herald purges at once and does without
/// transparent huge pages, unless `MIMALLOC_PURGE_DELAY` or
/// `MIMALLOC_ALLOW_THP` says otherwise.
mod allocator {
    use std::ffi::c_int;

    use libmimalloc_sys::mi_option_set;

    /// `mi_option_purge_delay` in `mi_option_t` (mimalloc.h).
    const PURGE_DELAY: c_int = 15;
    /// `mi_option_allow_thp` in `mi_option_t` (mimalloc.h, version 3).
    const ALLOW_THP: c_int = 43;

    /// Applies the options above; call first in `main`, before any thread starts.
    pub fn configure() {
        let unset = |names: &[&str]| names.iter().all(|name| std::env::var_os(name).is_none());
        if unset(&["MIMALLOC_PURGE_DELAY", "MIMALLOC_RESET_DELAY"]) {
            // SAFETY: plain option setter; no other thread exists yet.
            unsafe { mi_option_set(PURGE_DELAY, 0) };
        }
        if unset(&["MIMALLOC_ALLOW_THP"]) {
            // mimalloc read its options before `main` and has already asked
            // for huge pages on its first arena: the process-wide switch
            // covers that arena too (and is what mimalloc itself uses when
            // the option is off from the start).
            // SAFETY: as above; prctl only sets a flag of this process.
            unsafe {
                mi_option_set(ALLOW_THP, 0);
                libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
            }
        }
    }
}

const AFTER_HELP: &str = "\
Configuration:
  Settings are read from the TOML file given by --config (default ./config.toml;
  when that default file is absent, built-in defaults are used). Every key can be
  overridden by an environment variable HERALD_<SECTION>__<KEY>, for example
  HERALD_SERVER__PORT=9001 or HERALD_AUTH__JWT_SECRET=s3cret. An unknown key or a
  value of the wrong type stops start-up with a message naming it.

  Sections: [server] host, port, node_id, workers, allowed_origins,
  shutdown_timeout_ms, handshake_timeout_ms; [auth] required, jwt_secret,
  timeout_ms; [limits] max_message_bytes, rate_per_sec, rate_burst, rate_strikes,
  max_rooms_per_conn, outbound_queue, outbound_queue_bytes, max_connections;
  [heartbeat] interval_ms,
  timeout_ms; [api] key; [cluster] enabled, redis_url, node_ttl_ms;
  [supervision] max_restarts, window_ms; [debug] fault_injection; [log] format,
  level.
  See README.md for what each key does and its default.

Signals:
  SIGTERM or SIGINT drains: /readyz answers 503, every connection is closed with
  1001, and the process exits 0 within server.shutdown_timeout_ms.

Exit status:
  0 after a drain, 2 when the configuration or start-up fails, 70 when an actor
  keeps failing past supervision.max_restarts and the node stops itself.

Logging:
  To stderr, as text or JSON lines (log.format), at log.level (default: info;
  debug adds a line per connection opened, authenticated, closing and closed).
  RUST_LOG, when set, replaces log.level, e.g. RUST_LOG=herald=debug.";

/// Herald: a real-time WebSocket engine for very many concurrent connections.
#[derive(Parser)]
#[command(version, about, after_help = AFTER_HELP)]
struct Cli {
    /// Path of the TOML configuration file.
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Load and validate the configuration, print it, and exit.
    #[arg(long)]
    check_config: bool,
}

fn main() -> ExitCode {
    allocator::configure();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("herald: {error:#}");
            match error.downcast_ref::<herald::server::ServerError>() {
                Some(herald::server::ServerError::GaveUp(_)) => ExitCode::from(EXIT_GAVE_UP),
                _ => ExitCode::from(2),
            }
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let (path, required) = match cli.config {
        Some(path) => (path, true),
        None => (PathBuf::from("config.toml"), false),
    };
    let config = Config::load(&path, required).with_context(|| format!("configuration {}", path.display()))?;
    if cli.check_config {
        print!("{}", effective_toml(&config));
        return Ok(());
    }
    herald::logging::init(&config.log);
    Server::bind(config)?.with_signal_handling().run()?;
    Ok(())
}

/// The effective configuration as TOML, secrets redacted, for `--check-config`.
fn effective_toml(config: &Config) -> String {
    let mut shown = config.clone();
    for secret in [&mut shown.auth.jwt_secret, &mut shown.api.key] {
        if !secret.is_empty() {
            *secret = "<redacted>".into();
        }
    }
    toml::to_string_pretty(&shown).unwrap_or_else(|e| format!("# could not print the configuration: {e}"))
}
