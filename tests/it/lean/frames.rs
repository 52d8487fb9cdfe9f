//! Frames on an open connection: what the rate limit counts, fragments, UTF-8, closes.

use super::*;

#[tokio::test]
async fn websocket_pings_take_rate_tokens_and_a_ping_flood_closes_1008() {
    let server = server_with(|c| rate_limits(c, 1, 3));
    let (mut client, _) = ws_connect(&server).await;
    let before = Snapshot::take(&server).await;
    for _ in 0..10 {
        if !client.try_send_message(Message::Ping(b"flood".to_vec().into())).await {
            break;
        }
    }
    assert_eq!(client.expect_close().await.0, 1008);
    let after = Snapshot::take(&server).await;
    assert_moved(&before, &after, &[(RATE_CLOSES, 1.0)]);
}

#[tokio::test]
async fn a_message_in_21_fragments_takes_one_rate_token() {
    let server = server_with(|c| {
        c.limits.rate_per_sec = 10;
        c.limits.rate_burst = 20;
    });
    let (mut client, _) = ws_connect(&server).await;
    for fragment in fragments(&padded_ping("frag", 2100), 21) {
        client.send_message(fragment).await;
    }
    assert_eq!(client.recv().await, json!({"type": "pong", "id": "frag"}));
    // No RATE_LIMITED error for any of the fragments.
    client.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_message_in_more_than_128_fragments_closes_1008() {
    let server = start(config());
    let (mut client, _) = ws_connect(&server).await;
    for fragment in fragments(&padded_ping("most", 1280), 128) {
        client.send_message(fragment).await;
    }
    assert_eq!(client.recv().await, json!({"type": "pong", "id": "most"}));
    for fragment in fragments(&padded_ping("more", 1290), 129) {
        if !client.try_send_message(fragment).await {
            break;
        }
    }
    assert_eq!(client.expect_close().await, (1008, "too many fragments".to_owned()));
}

// ---- UTF-8 ---------------------------------------------------------------

#[tokio::test]
async fn text_that_is_not_utf8_closes_1007_whole_or_fragmented() {
    let server = start(config());
    let (mut whole, mut buf) = raw_ws(server.addr).await;
    whole.write_all(&client_frame(1, true, b"{\"type\":\"ping\",\"id\":\"\xff\"}")).await.expect("write");
    assert_eq!(close_code(&mut whole, &mut buf).await, Some(1007));

    let (mut split, mut buf) = raw_ws(server.addr).await;
    // "é" (c3 a9) cut between two fragments is valid once reassembled...
    let valid = [client_frame(1, false, b"{\"type\":\"ping\",\"id\":\"\xc3"), client_frame(0, true, b"\xa9\"}")];
    split.write_all(&valid.concat()).await.expect("write");
    assert_eq!(next_text(&mut split, &mut buf).await, json!({"type": "pong", "id": "é"}));
    // ...and c3 followed by 28 is not.
    let invalid = [client_frame(1, false, b"{\"type\":\"ping\",\"id\":\"\xc3"), client_frame(0, true, b"\x28\"}")];
    split.write_all(&invalid.concat()).await.expect("write");
    assert_eq!(close_code(&mut split, &mut buf).await, Some(1007));
}

// ---- closing -------------------------------------------------------------

#[tokio::test]
async fn a_close_is_answered_with_its_code_or_none_and_a_code_no_endpoint_sends_closes_1002() {
    let server = start(config());
    // A close without a code is answered without one: 1005 never goes on the wire.
    let (mut bare, mut buf) = raw_ws(server.addr).await;
    bare.write_all(&client_frame(8, true, b"")).await.expect("write");
    assert_eq!(next_frame(&mut bare, &mut buf).await, Some((8, Vec::new())));

    let (mut coded, mut buf) = raw_ws(server.addr).await;
    coded.write_all(&client_frame(8, true, &[&4000u16.to_be_bytes()[..], b"bye"].concat())).await.expect("write");
    assert_eq!(close_code(&mut coded, &mut buf).await, Some(4000));

    for code in [999u16, 1004, 1005, 1006, 1015, 2999, 5000] {
        let (mut bad, mut buf) = raw_ws(server.addr).await;
        bad.write_all(&client_frame(8, true, &code.to_be_bytes())).await.expect("write");
        assert_eq!(close_code(&mut bad, &mut buf).await, Some(1002), "a close with code {code}");
    }
}

// ---- slow consumers ------------------------------------------------------
