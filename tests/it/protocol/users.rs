//! Presence counted by user: several connections of one user, closes, status, double joins.

use super::*;

#[tokio::test]
async fn a_user_with_three_connections_is_one_user() {
    let server = server();
    let (mut bob, carol) = (ws_connect_as(&server, "bob").await, ws_connect_as(&server, "carol").await);
    bob.join("r").await;
    let mut tabs = Vec::new();
    for _ in 0..3 {
        let mut tab = ws_connect_as(&server, "alice").await;
        assert_eq!(users(&tab.join("r").await), set(&["alice", "bob"]));
        tabs.push(tab);
    }
    assert_eq!(bob.recv().await, json!({"type": "user_joined", "room": "r", "user": "alice"}));
    bob.expect_silence(QUIET).await;
    let carol = &Mutex::new(carol);
    assert_eq!(presence(&mut *carol.lock().await, "r").await, set(&["alice", "bob"]));

    let left = tabs[0].request(json!({"type": "leave", "room": "r"})).await;
    assert_eq!(left["type"], "left", "{left}");
    tabs.remove(1).close().await;
    bob.expect_silence(QUIET).await;
    assert_eq!(presence(&mut *carol.lock().await, "r").await, set(&["alice", "bob"]));

    tabs.remove(1).close().await;
    assert_eq!(bob.recv().await, json!({"type": "user_left", "room": "r", "user": "alice"}));
    bob.expect_silence(QUIET).await;
    let gone = eventually(WAIT, move || async move { presence(&mut *carol.lock().await, "r").await == set(&["bob"]) });
    assert!(gone.await, "alice stays in presence after her last connection left");
}

#[tokio::test]
async fn closing_a_connection_leaves_every_room_it_was_in() {
    let server = server();
    let (mut bob, mut carol) = (ws_connect_as(&server, "bob").await, ws_connect_as(&server, "carol").await);
    bob.join("one").await;
    carol.join("two").await;
    let mut alice = ws_connect_as(&server, "alice").await;
    alice.join("one").await;
    alice.join("two").await;
    bob.recv_type("user_joined").await;
    carol.recv_type("user_joined").await;
    drop(alice); // the TCP connection ends without a close handshake
    assert_eq!(bob.recv().await, json!({"type": "user_left", "room": "one", "user": "alice"}));
    assert_eq!(carol.recv().await, json!({"type": "user_left", "room": "two", "user": "alice"}));
    let bob = &Mutex::new(bob);
    let offline = eventually(WAIT, move || async move {
        let mut bob = bob.lock().await;
        !online(&mut bob, "alice").await && presence(&mut bob, "two").await == set(&["carol"])
    });
    assert!(offline.await, "alice is still online or still in room two");
}

#[tokio::test]
async fn status_follows_connections() {
    let server = server();
    let watcher = &Mutex::new(ws_connect_as(&server, "watcher").await);
    let is_online = move |expected: bool| move || async move { online(&mut *watcher.lock().await, "alice").await == expected };
    assert!(!online(&mut *watcher.lock().await, "alice").await);
    let tab1 = ws_connect_as(&server, "alice").await;
    let tab2 = ws_connect_as(&server, "alice").await;
    assert!(eventually(WAIT, is_online(true)).await, "alice is online with two connections");
    tab1.close().await;
    watcher.lock().await.expect_silence(QUIET).await;
    assert!(online(&mut *watcher.lock().await, "alice").await, "alice is online while one connection is open");
    tab2.close().await;
    assert!(eventually(WAIT, is_online(false)).await, "alice is offline once every connection closed");
}

#[tokio::test]
async fn joining_twice_sends_no_second_user_joined() {
    let (_server, mut alice, mut bob) = pair_alone("r").await;
    let again = bob.request(json!({"type": "join", "room": "r"})).await;
    match again["type"].as_str() {
        Some("joined") => assert_eq!(users(&again), set(&["alice", "bob"])),
        Some("error") => {}
        _ => panic!("second join answered {again}"),
    }
    alice.expect_silence(QUIET).await;
    assert_eq!(presence(&mut alice, "r").await, set(&["alice", "bob"]));
}

#[tokio::test]
async fn leaving_a_room_not_joined_is_left_or_not_in_room() {
    let (_server, mut alice) = alice_alone().await;
    let reply = alice.request(json!({"type": "leave", "room": "never", "id": 1})).await;
    match reply["type"].as_str() {
        Some("left") => assert_eq!(reply["room"], "never"),
        Some("error") => assert_eq!(reply["code"], "NOT_IN_ROOM"),
        _ => panic!("leave of a room not joined answered {reply}"),
    }
    assert_eq!(reply["id"], 1);
}
