//! Frame codec costs: decoding the client frames a connection receives most
//! (publish, join, ping, and a malformed frame) and encoding the server frames
//! it sends (`message`, `welcome`, `error`).
//!
//! Every client frame passes through `decode` once, and every published
//! message is encoded once per room however many members it reaches, so these
//! figures bound how many frames per second one core can parse and serialise.
//! Throughput is reported in bytes of frame text.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use herald::protocol::{decode, ErrorCode, ServerFrame};
use serde_json::value::RawValue;

const SMALL_DATA: &str = r#"{"text":"hello, room","mentions":["bob"]}"#;

/// A chat-sized payload of about 1 KiB: a long text field with some structure
/// around it, so both the string scan and the nesting check have work to do.
fn kib_data() -> String {
    let text = "The quick brown fox jumps over the lazy dog. ".repeat(20);
    let data = format!(
        r#"{{"text":"{text}","author":{{"id":"user-42","name":"Ada"}},"tags":["news","tech","rust"],"edited":false,"reply_to":12345}}"#
    );
    assert!((1000..1100).contains(&data.len()), "payload is {} bytes", data.len());
    data
}

fn publish(data: &str) -> String {
    format!(r#"{{"type":"publish","id":17,"room":"chat:lobby","data":{data}}}"#)
}

fn decoding(c: &mut Criterion) {
    let kib = kib_data();
    let frames = [
        ("publish_small", publish(SMALL_DATA)),
        ("publish_1kib", publish(&kib)),
        ("join", r#"{"type":"join","id":"j1","room":"chat:lobby"}"#.to_owned()),
        ("ping", r#"{"type":"ping"}"#.to_owned()),
        // Cut off mid-payload: the decoder must scan all of it before refusing.
        ("invalid_json", publish(&kib)[..600].to_owned()),
    ];
    let mut group = c.benchmark_group("decode");
    for (name, text) in &frames {
        let ok = decode(text).is_ok();
        assert_eq!(ok, *name != "invalid_json", "{name} decodes as expected");
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_function(*name, |b| b.iter(|| decode(black_box(text)).is_ok()));
    }
    group.finish();
}

fn encoding(c: &mut Criterion) {
    let small: Box<RawValue> = serde_json::from_str(SMALL_DATA).expect("valid JSON");
    let kib: Box<RawValue> = serde_json::from_str(&kib_data()).expect("valid JSON");
    let id: Box<RawValue> = serde_json::from_str("17").expect("valid JSON");
    let message =
        |data| ServerFrame::Message { room: "chat:lobby", from: "user-42", data, seq: 123_456, ts: 1_700_000_000_000 };
    let frames = [
        ("message_small", message(&small)),
        ("message_1kib", message(&kib)),
        (
            "welcome",
            ServerFrame::Welcome {
                conn: "5f3a9c21-48213",
                user: Some("user-42"),
                node: "5f3a9c21",
                heartbeat_ms: 25_000,
            },
        ),
        (
            "error",
            ServerFrame::Error {
                code: ErrorCode::NotInRoom,
                message: "publish to a room this connection has not joined",
                id: Some(&id),
            },
        ),
    ];
    let mut group = c.benchmark_group("encode");
    for (name, frame) in &frames {
        group.throughput(Throughput::Bytes(frame.encode().text().len() as u64));
        group.bench_function(*name, |b| b.iter(|| black_box(frame).encode()));
    }
    group.finish();
}

/// Short runs by default (nine benchmarks in about 40 s); flags such as
/// `--measurement-time` still override these.
fn short() -> Criterion {
    Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = short();
    targets = decoding, encoding
}
criterion_main!(benches);
