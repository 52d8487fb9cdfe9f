//! Rooms in namespaces: a join into an unlisted, quiet room costs the same
//! at any size, and the count moves with arrivals and departures.

use super::*;

const LIVE: &str = "[[namespaces]]\nprefix = \"live.\"\npresence = false\njoin_events = false\n";

#[actix_web::test]
async fn a_join_into_an_unlisted_quiet_room_sends_one_small_frame_whatever_the_room_s_size() {
    let f = fixture_with(LIVE).await;
    let mut collected = Vec::new();
    for conn in 1..=3000u64 {
        let (viewer, frames) = member(conn, &format!("viewer-{conn}"), 4);
        let (handle, users) = f.rooms.join("live.show".into(), viewer, None, None).await.unwrap();
        assert_eq!((users.json().get(), users.len()), ("[]", conn as usize));
        if conn == 1 {
            assert!(matches!(handle.room.state.lock().users, Users::Hashed(_)), "hashed, not kept sorted");
        }
        collected.push(frames);
    }
    settle().await;
    // Each member got its own `joined` and nothing else: no `user_joined`
    // went to anyone, and the last `joined` is as small as the first.
    let mut sizes = Vec::new();
    for frames in &collected {
        let frames = frames.lock();
        assert_eq!(frames.len(), 1, "{frames:?}");
        sizes.push(frames[0].len());
    }
    let last: Value = serde_json::from_str(&collected[2999].lock()[0]).unwrap();
    assert_eq!((last["users"].clone(), last["count"].clone()), (serde_json::json!([]), serde_json::json!(3000)));
    assert!(sizes[2999] <= sizes[0] + 3, "joined grew from {} to {} bytes", sizes[0], sizes[2999]);

    // A default room, for contrast: the k-th join sends k-1 `user_joined`.
    let (first, first_frames) = member(9001, "first", 64);
    f.rooms.join("lobby".into(), first, None, None).await.unwrap();
    for conn in 9002..9010 {
        let (other, _) = member(conn, &format!("u{conn}"), 64);
        f.rooms.join("lobby".into(), other, None, None).await.unwrap();
    }
    settle().await;
    assert_eq!(taken(&first_frames).len(), 8, "user_joined for each arrival");
}

#[actix_web::test]
async fn the_count_moves_with_first_and_last_connections_and_the_presence_reply_carries_it() {
    let f = fixture_with(LIVE).await;
    let (ann, _) = member(1, "ann", 16);
    let (ann_tab, _) = member(2, "ann", 16);
    let (bob, _) = member(3, "bob", 16);
    f.rooms.join("live.x".into(), ann, None, None).await.unwrap();
    assert_eq!(f.rooms.join("live.x".into(), ann_tab, None, None).await.unwrap().1.len(), 1, "one user, two tabs");
    assert_eq!(f.rooms.join("live.x".into(), bob, None, None).await.unwrap().1.len(), 2);
    f.rooms.leave("live.x".into(), ConnId(1));
    let presence = f.rooms.presence("live.x".into()).await.unwrap();
    assert_eq!((presence.json().get(), presence.len()), ("[]", 2), "ann still has a tab");
    f.rooms.leave("live.x".into(), ConnId(2));
    assert_eq!(f.rooms.presence("live.x".into()).await.unwrap().len(), 1);
}

#[actix_web::test]
async fn in_a_cluster_the_count_takes_in_the_other_node_s_users() {
    let (a, b) = clustered_pair_with(Arc::new(crate::cluster::relay::MemoryHub::default()), LIVE).await;
    let (ann, ann_frames) = member(1, "ann", 16);
    let (bob, _) = member(1, "bob", 16);
    let (carl, _) = member(2, "carl", 16);
    a.rooms.join("live.x".into(), ann, None, None).await.unwrap();
    assert_eq!(b.rooms.join("live.x".into(), bob, None, None).await.unwrap().1.len(), 2);
    settle().await;
    assert_eq!(a.rooms.join("live.x".into(), carl, None, None).await.unwrap().1.len(), 3, "bob on b counts on a");
    b.rooms.leave("live.x".into(), ConnId(1));
    settle().await;
    assert_eq!(a.rooms.presence("live.x".into()).await.unwrap().len(), 2, "bob left on b");
    settle().await;
    assert!(taken(&ann_frames).is_empty(), "no join events on either node");
}

#[actix_web::test]
async fn a_member_lost_while_a_dead_node_s_users_are_told_off_is_counted_out_once() {
    let (a, b) = clustered_pair().await;
    let (zed, _) = member(1, "zed", 64);
    let (bob, _) = member(2, "bob", 64);
    b.rooms.join("r".into(), zed, None, None).await.unwrap();
    b.rooms.join("r".into(), bob, None, None).await.unwrap();
    let (alice, alice_frames) = member(1, "alice", 64);
    a.rooms.join("r".into(), alice, None, None).await.unwrap();
    // zed's second tab, on a, takes its `joined` and nothing more.
    let (zed_tab, _) = member(2, "zed", 1);
    assert_eq!(a.rooms.join("r".into(), zed_tab, None, None).await.unwrap().1.len(), 3);
    settle().await;
    taken(&alice_frames);
    // b dies: telling alice that bob left finds zed's tab full, which takes
    // zed out too; each is counted out once.
    a.rooms.nodes_gone(Arc::new(std::iter::once(NodeId::from("b")).collect()));
    settle().await;
    let told: Vec<(Value, Value)> = taken(&alice_frames).iter().map(|f| (f["type"].clone(), f["user"].clone())).collect();
    assert_eq!(told, [("user_left".into(), "bob".into()), ("user_left".into(), "zed".into())]);
    let presence = a.rooms.presence("r".into()).await.unwrap();
    assert_eq!((names(&presence), presence.len()), (vec!["alice".to_owned()], 1));
    let (carl, _) = member(3, "carl", 64);
    assert_eq!(a.rooms.join("r".into(), carl, None, None).await.unwrap().1.len(), 2);
}

#[test]
fn members_found_gone_one_after_another_leave_in_a_loop_not_a_call_per_member() {
    // On a thread with a small stack, as a call per member found gone
    // (each one's `user_left` finding the next gone) would overflow it.
    let run = || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            use crate::delivery::testing::collector_with;
            let f = fixture().await;
            // Members that take their `joined`, then nothing: each `user_left`
            // of one that goes finds every other one full.
            for conn in 1..=2000u64 {
                let (outbox, _) = collector_with(1, |kind| kind != ServerKind::UserJoined);
                let member = Member { conn: ConnId(conn), user: format!("u{conn}").into(), outbox };
                f.rooms.join("crowd".into(), member, None, None).await.unwrap();
            }
            f.rooms.publish_from_server("crowd".into(), "server".into(), data("1").to_owned()).await.unwrap();
            settle().await;
            assert_eq!(f.metrics.memberships.get(), 0, "every member left");
            let (late, _) = member(9999, "late", 4);
            assert_eq!(f.rooms.join("crowd".into(), late, None, None).await.unwrap().1.len(), 1, "counted right");
        })
    };
    std::thread::Builder::new().stack_size(512 << 10).spawn(run).unwrap().join().unwrap();
}
