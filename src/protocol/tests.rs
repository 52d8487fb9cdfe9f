use super::*;

fn code(text: &str) -> ErrorCode {
    decode(text).unwrap_err().code
}

#[test]
fn decodes_every_client_frame() {
    let kinds: Vec<_> = [
        r#"{"type":"auth","token":"t"}"#,
        r#"{"type":"join","room":"a"}"#,
        r#"{"type":"leave","room":"a"}"#,
        r#"{"type":"publish","room":"a","data":null}"#,
        r#"{"type":"direct","to":"bob","data":{"x":1}}"#,
        r#"{"type":"typing","room":"a","typing":true}"#,
        r#"{"type":"presence","room":"a"}"#,
        r#"{"type":"status","users":["a","b"]}"#,
        r#"{"type":"ping","extra":[1,2]}"#,
    ]
    .iter()
    .map(|t| decode(t).unwrap().frame.kind())
    .collect();
    assert_eq!(kinds, &ClientKind::ALL[..9]);
}

#[test]
fn publish_keeps_data_verbatim_and_echo_defaults_to_true() {
    let req = decode(r#"{"type":"publish","room":"r","data": {"a" : [1, 2]},"id":7}"#).unwrap();
    assert_eq!(req.id.unwrap().get(), "7");
    match req.frame {
        ClientFrame::Publish { data, echo, .. } => {
            assert_eq!(data.get(), r#"{"a" : [1, 2]}"#);
            assert!(echo);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn malformed_frames_get_their_documented_codes() {
    assert_eq!(code("{"), ErrorCode::InvalidJson);
    assert_eq!(code("not json"), ErrorCode::InvalidJson);
    assert_eq!(code("[1,2]"), ErrorCode::BadRequest);
    assert_eq!(code("42"), ErrorCode::BadRequest);
    assert_eq!(code(r#"{"room":"a"}"#), ErrorCode::BadRequest);
    assert_eq!(code(r#"{"type":5}"#), ErrorCode::BadRequest);
    assert_eq!(code(r#"{"type":"fly"}"#), ErrorCode::UnknownType);
    assert_eq!(code(r#"{"type":"join"}"#), ErrorCode::BadRequest);
    assert_eq!(code(r#"{"type":"join","room":""}"#), ErrorCode::BadRequest);
    assert_eq!(code(r#"{"type":"join","room":"a b"}"#), ErrorCode::BadRequest);
    assert_eq!(code(&format!(r#"{{"type":"join","room":"{}"}}"#, "a".repeat(129))), ErrorCode::BadRequest);
    assert_eq!(code(r#"{"type":"publish","room":"a"}"#), ErrorCode::BadRequest);
    assert_eq!(code(r#"{"type":"publish","room":"a","data":1,"echo":"no"}"#), ErrorCode::BadRequest);
    assert_eq!(code(r#"{"type":"typing","room":"a"}"#), ErrorCode::BadRequest);
    assert_eq!(code(r#"{"type":"direct","to":3,"data":1}"#), ErrorCode::BadRequest);
    assert_eq!(code(r#"{"type":"status","users":[1]}"#), ErrorCode::BadRequest);
    assert_eq!(code(r#"{"type":"status","users":[""]}"#), ErrorCode::BadRequest);
    assert_eq!(code(&format!(r#"{{"type":"status","users":["{}"]}}"#, "u".repeat(257))), ErrorCode::BadRequest);
    assert_eq!(code(r#"{"type":"ping","type":"ping"}"#), ErrorCode::BadRequest);
}

#[test]
fn ids_are_strings_or_integers_and_echoed_on_errors() {
    assert_eq!(decode(r#"{"type":"fly","id":"x"}"#).unwrap_err().id.unwrap().get(), r#""x""#);
    assert_eq!(decode(r#"{"type":"join","id":-3}"#).unwrap_err().id.unwrap().get(), "-3");
    for bad in [r#"1.5"#, "true", "null", "[1]", r#"{"a":1}"#] {
        let text = format!(r#"{{"type":"ping","id":{bad}}}"#);
        let err = decode(&text).unwrap_err();
        assert_eq!((err.code, err.id.is_none()), (ErrorCode::BadRequest, true), "{bad}");
    }
}

#[test]
fn deep_nesting_is_refused_without_recursion() {
    let deep = format!(r#"{{"type":"publish","room":"a","data":{}{}}}"#, "[".repeat(100_000), "]".repeat(100_000));
    assert!(decode(&deep).is_err());
    let ok = format!(r#"{{"type":"publish","room":"a","data":{}{}}}"#, "[".repeat(60), "]".repeat(60));
    assert!(decode(&ok).is_ok());
    let in_string = format!(r#"{{"type":"publish","room":"a","data":"{}"}}"#, "[".repeat(500));
    assert!(decode(&in_string).is_ok());
}

/// `data` nested `depth` levels: arrays and objects in turn, the innermost holding 1.
fn nested(depth: usize) -> String {
    let open: String = (0..depth).map(|i| if i % 2 == 0 { "[" } else { r#"{"k":"# }).collect();
    let close: String = (0..depth).rev().map(|i| if i % 2 == 0 { "]" } else { "}" }).collect();
    format!("{open}1{close}")
}

#[test]
fn data_nests_up_to_128_levels_inside_the_frame() {
    assert!(DATA_TOO_DEEP.contains(&MAX_DATA_DEPTH.to_string()));
    for ty in ["publish", "direct"] {
        let frame = |depth| format!(r#"{{"type":"{ty}","room":"a","to":"bob","data":{},"id":1}}"#, nested(depth));
        let deepest = frame(128);
        match decode(&deepest) {
            Ok(Request { frame: ClientFrame::Publish { data, .. } | ClientFrame::Direct { data, .. }, .. }) => {
                assert_eq!(data.get(), nested(128));
            }
            other => panic!("{ty} at 128: {other:?}"),
        }
        let deeper = frame(129);
        let err = decode(&deeper).unwrap_err();
        assert_eq!((err.code, &*err.message, err.id.map(RawValue::get)), (ErrorCode::BadRequest, DATA_TOO_DEEP, Some("1")));
    }
    assert!(!nests_deeper_than(&nested(128), 128));
    assert!(nests_deeper_than(&nested(129), 128));
}

#[test]
fn auth_token_of_wrong_type_decodes_as_missing() {
    match decode(r#"{"type":"auth","token":5}"#).unwrap().frame {
        ClientFrame::Auth { token } => assert!(token.is_none()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn server_frames_serialise_as_documented() {
    let id = RawValue::from_string("\"q\"".into()).unwrap();
    let ack = ServerFrame::Ack { seq: Some(3), id: Some(&id) }.encode();
    assert_eq!(ack.text(), r#"{"type":"ack","seq":3,"id":"q"}"#);
    let data = RawValue::from_string("[1]".into()).unwrap();
    let msg = ServerFrame::Message { room: "r", from: "u", data: &data, seq: 1, ts: 2 }.encode();
    assert_eq!(msg.text(), r#"{"type":"message","room":"r","from":"u","data":[1],"seq":1,"ts":2}"#);
    let joined = ServerFrame::UserJoined { room: "r", user: "u" }.encode();
    assert_eq!(joined.text(), r#"{"type":"user_joined","room":"r","user":"u"}"#);
    let err = ServerFrame::Error { code: ErrorCode::NotInRoom, message: "m", id: None }.encode();
    assert_eq!(err.text(), r#"{"type":"error","code":"NOT_IN_ROOM","message":"m"}"#);
}
