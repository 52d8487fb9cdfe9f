//! The `herald` binary: parses the command line, loads the config, sets up
//! logging and runs a node.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser};
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

/// After the options with `-h`: where settings come from, in short.
const AFTER_HELP: &str = "\
Configuration:
  Settings are read from the TOML file given by --config (default ./config.toml)
  and overridden by environment variables HERALD_<SECTION>__<KEY>, for example
  HERALD_SERVER__PORT=9001. --help lists every key with its default and meaning.";

/// After the options with `--help`, before the key reference.
const CONFIGURATION: &str = "\
Configuration:
  Settings are read from the TOML file given by --config (default ./config.toml;
  when that default file is absent, built-in defaults are used). Every key can be
  overridden by an environment variable HERALD_<SECTION>__<KEY>, for example
  HERALD_SERVER__PORT=9001 or HERALD_AUTH__JWT_SECRET=s3cret. A list is written
  as a JSON array: HERALD_SERVER__ALLOWED_ORIGINS='[\"https://a.example.com\"]'.
  An unknown key or a bad value stops start-up with a message naming it.

Configuration keys, each with its default:
";

/// After the key reference with `--help`.
const AFTER_KEYS: &str = "\
Signals:
  SIGTERM or SIGINT drains: /readyz answers 503, every connection is closed with
  1001, and the process exits 0 within server.shutdown_timeout_ms.

Exit status:
  0 after a drain, 2 when the configuration or start-up fails, 70 when an actor
  keeps failing past supervision.max_restarts and the node stops itself.

Logging:
  To stderr, as text or JSON lines (log.format), at log.level (default: info;
  debug adds a line per connection opened, authenticated, closing and closed).
  RUST_LOG, when set, replaces log.level, e.g. RUST_LOG=herald=debug. Text is
  coloured only when stderr is a terminal and NO_COLOR is not set.";

/// The text after the options with `--help`: everything above, and every
/// configuration key with its default (from `Config::default()`) and meaning.
fn after_long_help() -> String {
    format!("{CONFIGURATION}{}\n{AFTER_KEYS}", herald::config::keys::reference(80))
}

/// Herald: a real-time WebSocket engine for very many concurrent connections.
#[derive(Parser)]
#[command(version, about, after_help = AFTER_HELP)]
struct Cli {
    /// Path of the TOML configuration file.
    ///
    /// Default: ./config.toml, used when it exists (otherwise the built-in
    /// defaults apply); a file named here must exist.
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Load and validate the configuration, print it, and exit.
    ///
    /// Reads the file and the HERALD_* variables as a start would, prints the
    /// effective configuration as TOML (secrets redacted) and exits 0, or
    /// exits 2 naming what is wrong. Default: off (Herald starts serving).
    #[arg(long)]
    check_config: bool,
}

fn main() -> ExitCode {
    allocator::configure();
    let matches = Cli::command().after_long_help(after_long_help()).get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
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
