//! The worker processes of a run: spawning them with their share of the
//! connections, sending commands to all, and gathering one event from each.
//!
//! Each child's stdout is read by its own thread into one channel, so a
//! silent or dead worker is noticed by a deadline instead of blocking the run.
//! Children still running when the run ends are killed, so nothing outlives it.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command as Process, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::ipc::{self, Command, Event, RoomPlan, Setup, StormPlan};

/// The children of one run.
pub struct Workers {
    children: Vec<Child>,
    stdins: Vec<Option<ChildStdin>>,
    events: mpsc::Receiver<(usize, Result<Event, String>)>,
    /// Why a worker stopped talking, noticed while gathering from the others.
    gone: Vec<Option<String>>,
}

/// The part of a setup that is the same for every worker.
pub struct Share {
    pub url: String,
    /// Where the publishers connect instead of `url`.
    pub publish_url: Option<String>,
    pub dialect: crate::cli::Dialect,
    pub transport: crate::cli::Transport,
    pub secret: Option<String>,
    pub sources: Vec<std::net::Ipv4Addr>,
    pub rooms: Option<RoomPlan>,
    /// Put before each room's name.
    pub room_prefix: String,
    /// `recover`'s clients (then `rooms` is `None`).
    pub storm: Option<StormPlan>,
    pub connect_timeout: Duration,
}

/// Splits `total` connections into `ceil(total / per_process)` nearly equal
/// contiguous ranges `(first, count)`.
pub fn split(total: usize, per_process: usize) -> Vec<(usize, usize)> {
    let workers = total.div_ceil(per_process.max(1)).max(1);
    let mut first = 0;
    (0..workers)
        .map(|w| {
            let count = total / workers + usize::from(w < total % workers);
            let range = (first, count);
            first += count;
            range
        })
        .collect()
}

impl Workers {
    /// Starts one child of this executable per range, each with its setup.
    pub fn spawn(share: &Share, total: usize, per_process: usize) -> Result<Self, String> {
        // `/proc/self/exe` is this very binary even if a rebuild has replaced
        // the file on disk since the coordinator started.
        let exe = match std::path::Path::new("/proc/self/exe").exists() {
            true => std::path::PathBuf::from("/proc/self/exe"),
            false => std::env::current_exe().map_err(|e| format!("own executable: {e}"))?,
        };
        let (tx, events) = mpsc::channel();
        let mut workers = Self { children: Vec::new(), stdins: Vec::new(), events, gone: Vec::new() };
        for (w, (first, count)) in split(total, per_process).into_iter().enumerate() {
            let mut child = Process::new(&exe)
                .arg0("herald-load")
                .arg("worker")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .map_err(|e| format!("spawn worker: {e}"))?;
            let stdout = child.stdout.take().expect("stdout is piped");
            workers.stdins.push(child.stdin.take());
            workers.children.push(child);
            workers.gone.push(None);
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let event = match line {
                        Ok(line) => serde_json::from_str(&line).map_err(|e| format!("bad event {line:?}: {e}")),
                        Err(e) => Err(format!("read: {e}")),
                    };
                    if tx.send((w, event)).is_err() {
                        return;
                    }
                }
                let _ = tx.send((w, Err("worker exited".into())));
            });
            let setup = Setup {
                url: share.url.clone(),
                publish_url: share.publish_url.clone(),
                dialect: share.dialect,
                transport: share.transport,
                secret: share.secret.clone(),
                sources: share.sources.clone(),
                first,
                count,
                rooms: share.rooms,
                room_prefix: share.room_prefix.clone(),
                storm: share.storm,
                connect_timeout_ms: share.connect_timeout.as_millis() as u64,
            };
            workers.send_to(w, &Command::Setup(setup))?;
        }
        Ok(workers)
    }

    pub fn len(&self) -> usize {
        self.children.len()
    }

    fn send_to(&mut self, w: usize, command: &Command) -> Result<(), String> {
        let stdin = self.stdins[w].as_mut().ok_or_else(|| format!("worker {w} has no input"))?;
        ipc::write_line(stdin, command).map_err(|e| format!("worker {w}: {e}"))
    }

    /// Sends `command` to every worker.
    pub fn broadcast(&mut self, command: &Command) -> Result<(), String> {
        (0..self.len()).try_for_each(|w| self.send_to(w, command))
    }

    /// One event from each worker, in worker order, picked by `pick`, before
    /// `deadline`. Any other event, a dead worker or the deadline is an error.
    pub fn gather<T>(&mut self, deadline: Instant, what: &str, pick: impl Fn(Event) -> Option<T>) -> Result<Vec<T>, String> {
        if let Some((w, why)) = self.gone.iter().enumerate().find_map(|(w, g)| g.as_ref().map(|g| (w, g))) {
            return Err(format!("worker {w} while waiting for {what}: {why}"));
        }
        let mut got: Vec<Option<T>> = (0..self.len()).map(|_| None).collect();
        while got.iter().any(Option::is_none) {
            let left = deadline.saturating_duration_since(Instant::now());
            let (w, event) = match self.events.recv_timeout(left) {
                Ok(received) => received,
                Err(_) => {
                    let missing: Vec<usize> = (0..got.len()).filter(|w| got[*w].is_none()).collect();
                    return Err(format!("workers {missing:?} sent no {what} in time"));
                }
            };
            let event = match event {
                Ok(event) => event,
                // A worker that has answered may exit (after `finish`, it
                // should); that only matters if it is asked again.
                Err(why) if got[w].is_some() => {
                    self.gone[w] = Some(why);
                    continue;
                }
                Err(why) => return Err(format!("worker {w} while waiting for {what}: {why}")),
            };
            let label = format!("{event:?}").chars().take(80).collect::<String>();
            got[w] = Some(pick(event).ok_or_else(|| format!("worker {w} sent {label}, expected {what}"))?);
        }
        Ok(got.into_iter().flatten().collect())
    }

    /// Closes the workers' input and waits for them to exit.
    pub fn wait(mut self, limit: Duration) {
        self.stdins.clear();
        let deadline = Instant::now() + limit;
        for child in &mut self.children {
            while Instant::now() < deadline {
                match child.try_wait() {
                    Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                    _ => break,
                }
            }
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for child in &mut self.children {
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_respects_the_per_process_limit_and_covers_everything() {
        assert_eq!(split(300, 100), vec![(0, 100), (100, 100), (200, 100)]);
        assert_eq!(split(19_000, 15_000), vec![(0, 9_500), (9_500, 9_500)]);
        assert_eq!(split(5, 15_000), vec![(0, 5)]);
        let parts = split(10_001, 1_000);
        assert_eq!(parts.len(), 11);
        assert!(parts.iter().all(|(_, c)| *c <= 1_000));
        assert_eq!(parts.iter().map(|(_, c)| c).sum::<usize>(), 10_001);
        assert_eq!(parts.last().map(|(f, c)| f + c), Some(10_001));
    }
}
