//! Child processes killed and reaped when dropped, free ports for them to
//! listen on, and temporary files and directories removed when dropped.

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A port that was free a moment ago and that no other test of this process
/// was given: two children starting at once are never handed the same port.
///
/// It is taken below the kernel's ephemeral range (32768 and up here), from
/// which outgoing connections and listeners on port 0 get theirs: a port
/// from that range, free when asked, can become a test client's local port
/// before the child binds it, and the child then fails with "Address
/// already in use". Each test process starts at its own place in the range.
pub fn free_port() -> u16 {
    const FIRST: u16 = 20_000;
    const COUNT: u16 = 12_000;
    static NEXT: Mutex<Option<u16>> = Mutex::new(None);
    let mut next = NEXT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut offset = next.unwrap_or((std::process::id() % u32::from(COUNT)) as u16);
    for _ in 0..COUNT {
        let port = FIRST + offset;
        offset = (offset + 1) % COUNT;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            *next = Some(offset);
            return port;
        }
    }
    panic!("no free port in {FIRST}..{}", FIRST + COUNT)
}

/// A path under the system temp dir, unique to this process and call.
fn temp_path(what: &str, extension: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("herald-test-{what}-{}-{n}{extension}", std::process::id()))
}

/// A config file with `contents`, unique to this process and call; removed on drop.
pub struct TempConfig(PathBuf);

impl TempConfig {
    pub fn new(contents: &str) -> Self {
        let path = temp_path("config", ".toml");
        std::fs::write(&path, contents).expect("write temp config");
        Self(path)
    }

    pub fn path(&self) -> &str {
        self.0.to_str().expect("utf-8 temp path")
    }
}

impl Drop for TempConfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A directory of its own under the system temp dir, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(what: &str) -> Self {
        let path = temp_path(what, "");
        std::fs::create_dir_all(&path).expect("create the temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process, killed (SIGKILL) and reaped when dropped, passing test
/// or not. Threads reading its pipes are joined once it is gone.
pub struct Process {
    child: Child,
    readers: Vec<JoinHandle<()>>,
}

impl Process {
    pub fn spawn(command: &mut Command) -> std::io::Result<Self> {
        Ok(Self { child: command.spawn()?, readers: Vec::new() })
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Its piped stdout, to read once.
    pub fn take_stdout(&mut self) -> Option<std::process::ChildStdout> {
        self.child.stdout.take()
    }

    /// Its piped stderr, to read once.
    pub fn take_stderr(&mut self) -> Option<std::process::ChildStderr> {
        self.child.stderr.take()
    }

    /// Reads `pipe` on a thread of its own, so that a chatty child never
    /// blocks on a full pipe; `read` gets it, and the thread is joined on drop.
    pub fn read_on_thread<P: Send + 'static>(&mut self, pipe: P, read: impl FnOnce(P) + Send + 'static) {
        self.readers.push(std::thread::spawn(move || read(pipe)));
    }

    /// Its exit status if it has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("poll child")
    }

    /// Sends it `signal`.
    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill has no memory-safety preconditions; the child is ours and not yet reaped.
        assert_eq!(unsafe { libc::kill(self.id() as libc::pid_t, signal) }, 0, "kill failed");
    }

    /// SIGKILL, and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
    }
}

/// Reads all of `pipe` on a thread of `process`; the bytes arrive once it ends.
fn read_all(process: &mut Process, pipe: Option<impl Read + Send + 'static>) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    process.read_on_thread(pipe, move |pipe| {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        let _ = tx.send(bytes);
    });
    rx
}

/// Runs `command` to completion with its output collected; kills it and
/// panics if it is still running after `within`. Fails only if it cannot be
/// started.
pub fn run_to_exit(command: &mut Command, within: Duration) -> std::io::Result<Output> {
    let mut process = Process::spawn(command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()))?;
    let (stdout, stderr) = (process.take_stdout(), process.take_stderr());
    let stdout = read_all(&mut process, stdout);
    let stderr = read_all(&mut process, stderr);
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(status) = process.try_wait() {
            break status;
        }
        assert!(Instant::now() < deadline, "{command:?} did not exit within {within:?}; killed");
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(process);
    Ok(Output { status, stdout: stdout.recv().expect("stdout"), stderr: stderr.recv().expect("stderr") })
}

/// The resident set size of process `pid`, in kB (0 once it is gone).
pub fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
