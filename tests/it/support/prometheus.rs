//! A real Prometheus, scraping the servers a test names.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{free_port, Process};

/// Where the Debian package puts Prometheus.
const PROMETHEUS_BIN: &str = "/usr/bin/prometheus";
/// How long Prometheus may take to start, and then to scrape every target once.
const PROMETHEUS_WAIT: Duration = Duration::from_secs(20);

/// The `prometheus` binary; installs the Debian package when missing and
/// running as root.
fn prometheus_binary() -> PathBuf {
    let find = || {
        let on_path = std::env::var_os("PATH")
            .map(|paths| std::env::split_paths(&paths).map(|dir| dir.join("prometheus")).collect::<Vec<_>>())
            .unwrap_or_default();
        std::iter::once(PathBuf::from(PROMETHEUS_BIN)).chain(on_path).find(|path| path.is_file())
    };
    if let Some(path) = find() {
        return path;
    }
    let root = Command::new("id").arg("-u").output().map(|out| out.stdout.trim_ascii() == b"0").unwrap_or(false);
    assert!(
        root,
        "prometheus is not installed (looked at {PROMETHEUS_BIN} and $PATH); \
         install it, e.g. `apt-get install -y prometheus`"
    );
    let status = Command::new("sh")
        .args(["-c", "apt-get update && apt-get install -y prometheus"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdout(Stdio::null())
        .status()
        .expect("run apt-get");
    assert!(status.success(), "`apt-get install -y prometheus` failed: {status}");
    find().expect("prometheus is installed by its package")
}

/// A GET that reports failures instead of panicking; HTTP/1.0, so the
/// answer is never chunked and ends with the connection.
async fn get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
        stream.write_all(request.as_bytes()).await.map_err(|e| format!("write: {e}"))?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.map_err(|e| format!("read: {e}"))?;
        let response = String::from_utf8_lossy(&response).into_owned();
        let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or("no status line")?;
        let body = response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
        Ok((status, body))
    };
    tokio::time::timeout(Duration::from_secs(10), exchange).await.unwrap_or(Err("timed out".into()))
}

/// Percent-encodes a query string value.
pub fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A Prometheus scraping `targets` every second, killed when dropped.
pub struct Prometheus {
    process: Process,
    addr: SocketAddr,
    log: PathBuf,
}

impl Prometheus {
    /// Starts it with its config and storage in `dir`; returns once `/-/ready` answers.
    pub async fn start(dir: &Path, targets: &[String]) -> Self {
        let binary = prometheus_binary();
        let listed: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: herald\n    metrics_path: /metrics\n    \
                 static_configs:\n      - targets: [{}]\n",
                listed.join(", ")
            ),
        )
        .unwrap();
        let log = dir.join("prometheus.log");
        let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let process = Process::spawn(
            Command::new(&binary)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
                .arg(format!("--web.listen-address={addr}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap()),
        )
        .unwrap_or_else(|e| panic!("spawn {}: {e}", binary.display()));
        let mut prometheus = Prometheus { process, addr, log };
        let deadline = Instant::now() + PROMETHEUS_WAIT;
        loop {
            if let Ok((200, _)) = get(addr, "/-/ready").await {
                return prometheus;
            }
            if let Some(status) = prometheus.process.try_wait() {
                panic!("prometheus exited ({status}):\n{}", prometheus.log_text());
            }
            if Instant::now() >= deadline {
                panic!("prometheus not ready on {addr} within {PROMETHEUS_WAIT:?}:\n{}", prometheus.log_text());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET path` decoded as Prometheus's JSON envelope.
    pub async fn api(&self, path: &str) -> Result<Value, String> {
        let (status, body) = get(self.addr, path).await?;
        let reply: Value = serde_json::from_str(&body).map_err(|_| format!("HTTP {status}: {body}"))?;
        if reply["status"] != "success" {
            let field = |name: &str| reply[name].as_str().unwrap_or_default().to_owned();
            return Err(format!("HTTP {status}: {}: {}", field("errorType"), field("error")));
        }
        Ok(reply["data"].clone())
    }

    /// An instant query; its result vector.
    pub async fn query(&self, promql: &str) -> Result<Vec<Value>, String> {
        let data = self.api(&format!("/api/v1/query?query={}", url_encode(promql))).await?;
        data["result"].as_array().cloned().ok_or_else(|| format!("no result vector: {data}"))
    }

    /// Waits until every target is scraped and up.
    pub async fn until_up(&self, targets: &[String]) {
        let deadline = Instant::now() + PROMETHEUS_WAIT;
        loop {
            let up: BTreeSet<String> = self
                .query("up == 1")
                .await
                .unwrap_or_default()
                .iter()
                .filter_map(|series| series["metric"]["instance"].as_str().map(str::to_owned))
                .collect();
            if targets.iter().all(|t| up.contains(t)) {
                return;
            }
            if Instant::now() >= deadline {
                let state = self.api("/api/v1/targets").await.unwrap_or_else(|e| json!(e));
                panic!(
                    "prometheus did not scrape {targets:?} within {PROMETHEUS_WAIT:?}; targets: {state}\n{}",
                    self.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
