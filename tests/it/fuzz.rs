//! Property tests that act as a bounded fuzzer: arbitrary bytes and arbitrary
//! JSON into the frame decoder, and arbitrary frames into a live connection's
//! frame handler over a real socket. Each runs a fixed number of cases, so the
//! test command's time stays bounded.

use crate::support::*;

use std::time::Duration;

use herald::protocol::{decode, ClientFrame, ErrorCode};
use proptest::prelude::*;
use serde_json::{json, Map, Value};
use tokio_tungstenite::tungstenite::Message;

const FRAME_TYPES: [&str; 11] =
    ["auth", "join", "leave", "publish", "direct", "typing", "presence", "status", "ping", "bogus", ""];
const FIELDS: [&str; 10] = ["type", "id", "room", "data", "echo", "token", "to", "typing", "users", "extra"];
const SERVER_TYPES: [&str; 15] = [
    "welcome", "authed", "joined", "left", "ack", "presence", "status", "pong", "message", "direct", "broadcast",
    "user_joined", "user_left", "typing", "error",
];
const CLOSE_CODES: [u16; 9] = [1000, 1002, 1007, 1008, 1009, 1011, 4002, 4003, 4008];

/// Any JSON value, nested a few levels.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        "[a-z:._-]{0,12}".prop_map(Value::from),
        any::<String>().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{0,6}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A frame-shaped object: a known (or bogus) type and any subset of the
/// fields frames use, each with any JSON value.
fn frame_like() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(&FRAME_TYPES[..]),
        prop::collection::vec((prop::sample::select(&FIELDS[1..]), json_value()), 0..6),
    )
        .prop_map(|(ty, fields)| {
            let mut frame = Map::new();
            frame.insert("type".into(), json!(ty));
            for (k, v) in fields {
                frame.insert(k.to_string(), v);
            }
            Value::Object(frame)
        })
}

fn check_decoded(text: &str) {
    match decode(text) {
        Ok(request) => {
            if let ClientFrame::Publish { data, .. } | ClientFrame::Direct { data, .. } = request.frame {
                serde_json::from_str::<serde::de::IgnoredAny>(data.get()).expect("data is valid JSON");
            }
        }
        Err(rejection) => {
            assert!(!rejection.message.is_empty());
            let code = rejection.code;
            assert!(
                matches!(code, ErrorCode::InvalidJson | ErrorCode::BadRequest | ErrorCode::UnknownType),
                "decoding alone never yields {code:?}"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn decoder_survives_arbitrary_text(text in any::<String>()) {
        check_decoded(&text);
    }

    #[test]
    fn decoder_survives_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        check_decoded(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn decoder_survives_arbitrary_json(value in json_value()) {
        check_decoded(&value.to_string());
    }

    #[test]
    fn decoder_survives_frame_shaped_json(frame in frame_like()) {
        check_decoded(&frame.to_string());
    }
}

/// What a client may send in one case.
#[derive(Debug, Clone)]
enum Input {
    Frame(Value),
    Text(String),
    Binary(Vec<u8>),
}

fn input() -> impl Strategy<Value = Input> {
    prop_oneof![
        6 => frame_like().prop_map(Input::Frame),
        1 => any::<String>().prop_map(Input::Text),
        1 => prop::collection::vec(any::<u8>(), 0..64).prop_map(Input::Binary),
    ]
}

/// Sends `inputs` on a fresh connection and checks every answer is a
/// documented frame or close.
async fn exercise(server: &TestServer, inputs: Vec<Input>) {
    let (mut client, _) = ws_connect(server).await;
    for input in inputs {
        let msg = match input {
            Input::Frame(v) => Message::Text(v.to_string().into()),
            Input::Text(t) => Message::Text(t.into()),
            Input::Binary(b) => Message::Binary(b.into()),
        };
        // The server may close mid-sequence (e.g. 4002 after a bad auth frame).
        if !client.try_send_message(msg).await {
            break;
        }
    }
    // Drain what came back until the connection goes quiet.
    while let Some(event) = client.next_event_within(Duration::from_millis(150)).await {
        match event {
            Event::Frame(frame) => {
                let ty = frame["type"].as_str().unwrap_or_default();
                assert!(SERVER_TYPES.contains(&ty), "undocumented frame {frame}");
                if ty == "error" {
                    assert!(frame["code"].is_string() && frame["message"].is_string(), "{frame}");
                }
            }
            Event::Closed(Some((code, _))) => {
                assert!(CLOSE_CODES.contains(&code), "undocumented close code {code}");
                return;
            }
            Event::Closed(None) => return,
        }
    }
}

#[test]
fn connection_handler_survives_arbitrary_frames() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut config = config();
    config.auth.required = false;
    config.limits.max_message_bytes = 4096;
    let server = start(config);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    runner
        .run(&prop::collection::vec(input(), 1..12), |inputs| {
            runtime.block_on(exercise(&server, inputs));
            Ok(())
        })
        .unwrap();
    // After everything, the server still serves a normal session.
    runtime.block_on(async {
        let (mut a, _) = ws_connect(&server).await;
        a.join("after-fuzz").await;
        let ack = a.request(json!({"type": "publish", "room": "after-fuzz", "data": 1, "id": 1})).await;
        assert_eq!(ack["type"], "ack");
        assert_eq!(a.recv().await["type"], "message");
        assert_eq!(http_get(server.addr, "/healthz").await.0, 200);
    });
}
