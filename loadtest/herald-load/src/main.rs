//! `herald-load`: parses the command line and hands over to the coordinator,
//! or, for the hidden `worker` subcommand, to a worker process.

use std::process::ExitCode;

use clap::Parser;
use herald_load::cli::{Cli, Mode};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.mode {
        Mode::Worker => match herald_load::worker::run() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("herald-load worker: {e}");
                ExitCode::FAILURE
            }
        },
        mode => herald_load::coordinator::run(mode),
    }
}
