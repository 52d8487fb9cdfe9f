//! The real `herald` binary as a child process: the one way the tests run
//! it, whether it should refuse to start, serve on a free port, be killed,
//! signalled, measured or limited.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{fetch, free_port, run_to_exit, Endpoint, Process, TempConfig};

/// How long `herald` may take to answer once started (a node in a cluster
/// reaches Redis first).
const START_WAIT: Duration = Duration::from_secs(15);
/// How long `herald` may take to exit when it should not start at all.
const EXIT_WAIT: Duration = Duration::from_secs(10);

/// How to run `herald`: no `HERALD_*` variable is inherited from the test's
/// environment, and `RUST_LOG=warn` unless changed.
pub struct HeraldCommand {
    command: Command,
    config: Option<TempConfig>,
    ready: &'static str,
}

impl HeraldCommand {
    pub fn new() -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("HERALD_") {
                command.env_remove(key);
            }
        }
        command.env("RUST_LOG", "warn");
        Self { command, config: None, ready: "/healthz" }
    }

    /// `--config` with a file holding `toml`, removed once the process is gone.
    pub fn config(mut self, toml: &str) -> Self {
        let file = TempConfig::new(toml);
        self.command.args(["--config", file.path()]);
        self.config = Some(file);
        self
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.command.arg(arg);
        self
    }

    pub fn env(mut self, key: &str, value: impl AsRef<OsStr>) -> Self {
        self.command.env(key, value);
        self
    }

    pub fn env_remove(mut self, key: &str) -> Self {
        self.command.env_remove(key);
        self
    }

    /// Runs it with a file limit (`RLIMIT_NOFILE`) of `nofile`.
    pub fn file_limit(mut self, nofile: u64) -> Self {
        // SAFETY: the closure runs in the forked child before exec and only
        // calls setrlimit, which is async-signal-safe; it allocates nothing.
        unsafe {
            self.command.pre_exec(move || {
                let limit = libc::rlimit { rlim_cur: nofile, rlim_max: nofile };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        self
    }

    /// The path [`Self::start`] waits for a 200 from (`/healthz` unless changed).
    pub fn ready_at(mut self, path: &'static str) -> Self {
        self.ready = path;
        self
    }

    /// The command itself, for a test that wires the child's output on its
    /// own. It must have no [`Self::config`]: the file goes with `self`.
    pub fn into_command(self) -> Command {
        assert!(self.config.is_none(), "a config file would be removed before the process reads it");
        self.command
    }

    /// Runs it to completion with its output collected; kills it and panics
    /// if it is still running after 10 s: a config that should stop start-up
    /// must not leave a server running.
    pub fn run_to_exit(mut self) -> Output {
        run_to_exit(&mut self.command, EXIT_WAIT).expect("spawn herald")
    }

    /// Starts it on a free port (`HERALD_SERVER__PORT`), collecting what it
    /// writes; returns once the ready path answers 200.
    pub async fn start(mut self) -> Herald {
        let port = free_port();
        self.command
            .env("HERALD_SERVER__PORT", port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut process = Process::spawn(&mut self.command).expect("spawn herald");
        let output = Arc::new(Mutex::new(Captured::default()));
        let (stdout, stderr) = (process.take_stdout().expect("piped stdout"), process.take_stderr().expect("piped stderr"));
        let sink = output.clone();
        process.read_on_thread(stdout, move |pipe| {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                sink.lock().unwrap().log.push_str(&format!("{line}\n"));
            }
        });
        let sink = output.clone();
        process.read_on_thread(stderr, move |pipe| {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut captured = sink.lock().unwrap();
                captured.log.push_str(&format!("{line}\n"));
                captured.stderr.push(line);
            }
        });
        let mut herald = Herald { process, addr: ([127, 0, 0, 1], port).into(), output, _config: self.config };
        let deadline = Instant::now() + START_WAIT;
        while fetch(herald.addr, self.ready).await.map(|r| r.0) != Some(200) {
            if let Some(status) = herald.process.try_wait() {
                panic!("herald exited before answering {}: {status}\n{}", self.ready, herald.log());
            }
            assert!(
                Instant::now() < deadline,
                "herald did not answer {} on {} within {START_WAIT:?}\n{}",
                self.ready,
                herald.addr,
                herald.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        herald
    }
}

/// What a `herald` process wrote.
#[derive(Default)]
struct Captured {
    /// stdout and stderr, line by line as they came.
    log: String,
    stderr: Vec<String>,
}

/// A running `herald` process, killed and reaped when dropped; its config
/// file goes with it.
pub struct Herald {
    process: Process,
    pub addr: SocketAddr,
    output: Arc<Mutex<Captured>>,
    _config: Option<TempConfig>,
}

impl Endpoint for Herald {
    fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Herald {
    pub fn pid(&self) -> u32 {
        self.process.id()
    }

    /// Everything it wrote so far, stdout and stderr.
    pub fn log(&self) -> String {
        self.output.lock().unwrap().log.clone()
    }

    /// Its stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr_lines().iter().map(|line| format!("{line}\n")).collect()
    }

    /// Its stderr so far, line by line.
    pub fn stderr_lines(&self) -> Vec<String> {
        self.output.lock().unwrap().stderr.clone()
    }

    pub fn signal(&self, signal: libc::c_int) {
        self.process.signal(signal);
    }

    /// SIGKILL: no goodbye to anyone.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Waits for it to exit, at most until `deadline`.
    pub async fn exit_by(&mut self, deadline: Instant) -> ExitStatus {
        loop {
            if let Some(status) = self.process.try_wait() {
                return status;
            }
            assert!(Instant::now() < deadline, "herald did not exit in time\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
