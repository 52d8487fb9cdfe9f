//! What a new user meets first, against the real `herald` binary or a real
//! server: a bad `log.level`, a port already in use, logs redirected to a
//! file, `--help`, lists from the environment, and how deep `data` may nest.

use std::io::Read;
use std::net::TcpListener;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use herald::protocol::DATA_TOO_DEEP;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

/// How long a child process may take to start listening.
const PROCESS_WAIT: Duration = Duration::from_secs(10);

/// `herald` as a new user starts it: nothing from the test's environment
/// (no `HERALD_*`, `RUST_LOG` or `NO_COLOR`), on a free port.
fn herald() -> HeraldCommand {
    HeraldCommand::new().env_remove("RUST_LOG").env_remove("NO_COLOR").env("HERALD_SERVER__PORT", free_port().to_string())
}

/// Asserts that herald refused to start with status 2, and returns its stderr.
fn assert_refused(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(2), "herald should have refused to start; stderr: {stderr}");
    stderr
}

// ---- log.level -----------------------------------------------------------

#[test]
fn a_bad_log_level_stops_start_up_naming_the_key_the_value_and_what_is_accepted() {
    let from_file = herald().config("[log]\nlevel = \"loud\"\n");
    let from_env = herald().env("HERALD_LOG__LEVEL", "loud");
    let checked = herald().env("HERALD_LOG__LEVEL", "loud").arg("--check-config");
    for command in [from_file, from_env, checked] {
        let stderr = assert_refused(&command.run_to_exit());
        for needle in ["log.level", "\"loud\"", "error, warn, info, debug or trace", "target=level"] {
            assert!(stderr.contains(needle), "stderr should say {needle:?}: {stderr}");
        }
    }
    let output = herald().env("HERALD_LOG__LEVEL", "warn,herald::cluster=debug").arg("--check-config").run_to_exit();
    assert!(output.status.success(), "a filter of directives is still a level: {output:?}");
}

// ---- a port already in use -----------------------------------------------

/// The listening socket is bound before anything else starts: a clustered
/// node whose Redis is unreachable would log that (and start its actors)
/// before finding its port taken.
#[test]
fn a_taken_port_stops_start_up_before_anything_else_starts() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().unwrap().port();
    let command = herald()
        .env("HERALD_SERVER__PORT", port.to_string())
        .env("HERALD_CLUSTER__ENABLED", "true")
        .env("HERALD_CLUSTER__REDIS_URL", format!("redis://127.0.0.1:{}", free_port()))
        .env("HERALD_LOG__LEVEL", "trace");
    let stderr = assert_refused(&command.run_to_exit());
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "nothing but the error: {stderr}");
    assert!(lines[0].starts_with(&format!("herald: could not listen on 127.0.0.1:{port}: ")), "{stderr}");
}

#[test]
fn a_taken_port_is_reported_once_with_its_cause_once() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().unwrap().port();
    let stderr = assert_refused(&herald().env("HERALD_SERVER__PORT", port.to_string()).run_to_exit());
    let cause = std::io::Error::from_raw_os_error(libc::EADDRINUSE).to_string();
    assert_eq!(stderr, format!("herald: could not listen on 127.0.0.1:{port}: {cause}\n"));
}

// ---- colours -------------------------------------------------------------

/// Starts `command` with stderr going to `stderr`, and returns what it wrote
/// there, read from `output`, once it logged that it listens (or after
/// [`PROCESS_WAIT`]).
fn log_until_listening(command: HeraldCommand, stderr: Stdio, output: impl Read + Send + 'static) -> String {
    let mut command: Command = command.into_command();
    let child = Process::spawn(command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(stderr)).expect("spawn herald");
    // The command holds the child's end too: reads end when the child's do.
    drop(command);
    let _child = child;
    let log = Arc::new(Mutex::new(Vec::new()));
    let sink = log.clone();
    std::thread::spawn(move || {
        let mut output = output;
        let mut buf = [0; 4096];
        while let Ok(n @ 1..) = output.read(&mut buf) {
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    let deadline = Instant::now() + PROCESS_WAIT;
    loop {
        let text = String::from_utf8_lossy(&log.lock().unwrap()).into_owned();
        if text.contains("herald listening") || Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A new pseudo-terminal: its controlling side and the terminal a child writes to.
fn terminal() -> (std::fs::File, std::fs::File) {
    use std::os::fd::FromRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    // SAFETY: plain libc calls on a descriptor this function owns; `name`
    // is a buffer of the length given.
    unsafe {
        let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
        assert!(master >= 0, "no pseudo-terminal: {}", std::io::Error::last_os_error());
        assert_eq!(libc::grantpt(master), 0);
        assert_eq!(libc::unlockpt(master), 0);
        let mut name = [0 as libc::c_char; 128];
        assert_eq!(libc::ptsname_r(master, name.as_mut_ptr(), name.len()), 0);
        let path = std::ffi::CStr::from_ptr(name.as_ptr()).to_str().expect("utf-8 terminal name").to_owned();
        let slave = std::fs::OpenOptions::new().read(true).write(true).custom_flags(libc::O_NOCTTY).open(path).expect("open the terminal");
        (std::fs::File::from_raw_fd(master), slave)
    }
}

#[test]
fn logs_written_to_a_pipe_carry_no_colour_codes() {
    let (reader, writer) = std::io::pipe().expect("pipe");
    let log = log_until_listening(herald(), Stdio::from(writer), reader);
    assert!(log.contains("herald listening"), "{log:?}");
    assert!(!log.contains('\u{1b}'), "escape codes in a piped log: {log:?}");
}

#[test]
fn logs_on_a_terminal_are_coloured_unless_no_color_is_set() {
    let (master, slave) = terminal();
    let log = log_until_listening(herald(), Stdio::from(slave), master);
    assert!(log.contains("herald listening"), "{log:?}");
    assert!(log.contains("\u{1b}["), "a terminal gets colours: {log:?}");

    let (master, slave) = terminal();
    let log = log_until_listening(herald().env("NO_COLOR", "1"), Stdio::from(slave), master);
    assert!(log.contains("herald listening"), "{log:?}");
    assert!(!log.contains('\u{1b}'), "NO_COLOR turns colours off: {log:?}");
}

// ---- --help --------------------------------------------------------------

#[test]
fn help_gives_every_option_and_key_with_its_default_and_meaning() {
    let output = herald().arg("--help").run_to_exit();
    assert!(output.status.success(), "{output:?}");
    let help = String::from_utf8_lossy(&output.stdout).into_owned();

    // Each flag's description says its default.
    for (flag, next) in [("--config <PATH>", "--check-config"), ("--check-config", "--help")] {
        let from = help.find(flag).unwrap_or_else(|| panic!("{flag} missing:\n{help}"));
        let to = from + help[from..].find(next).unwrap_or_else(|| panic!("{next} missing:\n{help}"));
        assert!(help[from..to].contains("Default"), "{flag} says no default:\n{help}");
    }

    // Each key under its section, with the default `Config::default()` has,
    // and a line of meaning after it.
    let toml::Value::Table(sections) = toml::Value::try_from(herald::Config::default()).unwrap() else { panic!() };
    let mut keys = 0;
    for (section, table) in sections {
        let start = help.find(&format!("\n  [{section}]\n")).unwrap_or_else(|| panic!("[{section}] missing:\n{help}"));
        let end = help[start + 1..].find("\n  [").map_or(help.len(), |at| start + 1 + at);
        let part = &help[start..end];
        for (key, default) in table.as_table().unwrap() {
            let line = format!("\n  {key} = {default}\n");
            let at = part.find(&line).unwrap_or_else(|| panic!("`{line}` missing under [{section}]:\n{help}"));
            let meaning = part[at + line.len()..].lines().next().unwrap_or("");
            assert!(meaning.starts_with("      ") && meaning.trim().len() > 10, "{section}.{key} has no meaning:\n{help}");
            keys += 1;
        }
    }
    assert!(keys > 20, "{keys} keys:\n{help}");
}

// ---- lists from the environment ------------------------------------------

#[test]
fn a_list_from_the_environment_is_a_json_array_as_the_readme_shows() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README.md");
    let example = readme
        .lines()
        .find_map(|l| l.strip_prefix("HERALD_SERVER__ALLOWED_ORIGINS='"))
        .and_then(|rest| rest.split_once('\''))
        .map(|(value, _)| value.to_owned())
        .expect("README.md shows how to set server.allowed_origins from the environment");
    let output = herald().env("HERALD_SERVER__ALLOWED_ORIGINS", &example).arg("--check-config").run_to_exit();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{example} refused: {}", String::from_utf8_lossy(&output.stderr));
    let shown: herald::Config = toml::from_str(&stdout).expect("--check-config prints TOML");
    let expected: Vec<String> = serde_json::from_str(&example).expect("the README's example is a JSON array");
    assert!(expected.len() >= 2, "{example}");
    assert_eq!(shown.server.allowed_origins, expected);

    for bad in ["https://app.example.com", "https://app.example.com,https://admin.example.com"] {
        let stderr =
            assert_refused(&herald().env("HERALD_SERVER__ALLOWED_ORIGINS", bad).arg("--check-config").run_to_exit());
        assert!(stderr.contains("server.allowed_origins") && stderr.contains("JSON array"), "{bad}: {stderr}");
    }
}

// ---- how deep `data` may nest --------------------------------------------

/// `data` nested `depth` levels deep: arrays and objects in turn, the innermost holding 1.
fn nested(depth: usize) -> String {
    let open: String = (0..depth).map(|i| if i % 2 == 0 { "[" } else { r#"{"k":"# }).collect();
    let close: String = (0..depth).rev().map(|i| if i % 2 == 0 { "]" } else { "}" }).collect();
    format!("{open}1{close}")
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A WebSocket whose frames are read as text: a `message` frame around the
/// deepest `data` is deeper than serde_json parses into a `Value`.
struct RawClient(Ws);

impl RawClient {
    async fn connect(server: &TestServer) -> Self {
        let (ws, _) = tokio_tungstenite::connect_async(server.ws_url()).await.expect("websocket upgrade");
        let mut client = Self(ws);
        assert!(client.text().await.starts_with(r#"{"type":"welcome""#));
        client
    }

    async fn send(&mut self, text: String) {
        self.0.send(Message::Text(text.into())).await.expect("send");
    }

    /// The next text frame; panics on a close or after [`WAIT`].
    async fn text(&mut self) -> String {
        loop {
            match tokio::time::timeout(WAIT, self.0.next()).await {
                Ok(Some(Ok(Message::Text(text)))) => return text.to_string(),
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// The next frame whose type is `ty`, as text.
    async fn text_of_type(&mut self, ty: &str) -> String {
        let prefix = format!(r#"{{"type":"{ty}""#);
        loop {
            let text = self.text().await;
            if text.starts_with(&prefix) {
                return text;
            }
        }
    }

    async fn request(&mut self, frame: Value) -> Value {
        self.send(frame.to_string()).await;
        serde_json::from_str(&self.text().await).expect("a JSON reply")
    }
}

#[tokio::test]
async fn data_nested_128_deep_is_delivered_and_129_is_bad_request() {
    let server = start(config());
    let mut alice = RawClient::connect(&server).await;
    let mut bob = RawClient::connect(&server).await;
    assert_eq!(alice.request(json!({"type": "join", "room": "deep"})).await["type"], "joined");
    assert_eq!(bob.request(json!({"type": "join", "room": "deep"})).await["type"], "joined");
    alice.text_of_type("user_joined").await;

    // 128 levels inside the frame's object: 129 for the whole frame.
    let deepest = nested(128);
    alice.send(format!(r#"{{"type":"publish","room":"deep","data":{deepest},"id":"ok","echo":false}}"#)).await;
    let ack: Value = serde_json::from_str(&alice.text().await).unwrap();
    assert_eq!((ack["type"].as_str(), ack["id"].as_str()), (Some("ack"), Some("ok")), "{ack}");
    let message = bob.text_of_type("message").await;
    assert!(message.contains(&format!(r#""data":{deepest},"#)), "delivered as sent: {message}");

    let deeper = nested(129);
    alice.send(format!(r#"{{"type":"publish","room":"deep","data":{deeper},"id":"deep","echo":false}}"#)).await;
    let error: Value = serde_json::from_str(&alice.text().await).unwrap();
    assert_eq!(error, json!({"type": "error", "code": "BAD_REQUEST", "message": DATA_TOO_DEEP, "id": "deep"}));

    // Both connections live on, and the refused message reached nobody.
    assert_eq!(alice.request(json!({"type": "ping", "id": 1})).await, json!({"type": "pong", "id": 1}));
    alice.send(json!({"type": "publish", "room": "deep", "data": "after", "echo": false}).to_string()).await;
    let next: Value = serde_json::from_str(&bob.text_of_type("message").await).unwrap();
    assert_eq!(next["data"], "after");
}
