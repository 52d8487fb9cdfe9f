//! The outbox over a real socket pair: the `drop` and `latest` policies,
//! the slot a `latest` room keeps, and what still closes a slow connection.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

use super::*;

/// An outbox over one end of a socket pair whose queue holds `frames`,
/// with the other end to read from.
fn outbox(frames: usize) -> (Outbox, UnixStream, UnixStream) {
    outbox_over(TransportKind::WebSocket, frames)
}

fn outbox_over(transport: TransportKind, frames: usize) -> (Outbox, UnixStream, UnixStream) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    let outbox = Outbox::new(ours.as_raw_fd(), transport, |_| true, Bounds::new(frames, usize::MAX));
    (outbox, ours, theirs)
}

fn message(room: &str, seq: u64) -> Encoded {
    let pad = "x".repeat(16 * 1024);
    Encoded::new(ServerKind::Message, &format!(r#"{{"type":"message","room":"{room}","from":"s","data":"{pad}","seq":{seq},"ts":1}}"#))
}

/// Delivers messages 1, 2, ... of `room` until one does not fit, and
/// returns the `seq` of that one.
fn fill(outbox: &Outbox, room: &RoomName, policy: SlowConsumer, metrics: &Metrics) -> u64 {
    (1..10_000).find(|&seq| outbox.deliver_in(&message(room, seq), room, policy, metrics) != Delivery::Queued).unwrap()
}

/// Reads everything the outbox writes, flushing as the reader drains it,
/// and returns the `seq` of every message of `room`, in order.
fn drain(outbox: &Outbox, theirs: UnixStream, room: &str) -> Vec<u64> {
    seqs_in(&read_all(outbox, theirs), room)
}

fn read_all(outbox: &Outbox, mut theirs: UnixStream) -> String {
    theirs.set_read_timeout(Some(std::time::Duration::from_millis(100))).unwrap();
    let mut bytes = Vec::new();
    let mut chunk = vec![0; 1 << 16];
    loop {
        let flushed = outbox.flush();
        match theirs.read(&mut chunk) {
            Ok(n) if n > 0 => bytes.extend_from_slice(&chunk[..n]),
            _ if flushed.is_ok() && !outbox.has_queued() => break,
            _ => {}
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The `seq` of every message of `room` in `text`, in order.
fn seqs_in(text: &str, room: &str) -> Vec<u64> {
    let marker = format!(r#""room":"{room}""#);
    text.match_indices(&marker)
        .map(|(at, _)| {
            let seq = &text[at..][text[at..].find(r#""seq":"#).unwrap() + 6..];
            seq[..seq.find(',').unwrap()].parse().unwrap()
        })
        .collect()
}

#[test]
fn a_drop_room_skips_what_does_not_fit_and_the_connection_stays() {
    let metrics = Metrics::new();
    let (outbox, _ours, theirs) = outbox(4);
    let room = RoomName::from("feed");
    let first_skipped = fill(&outbox, &room, SlowConsumer::Drop, &metrics);
    assert_eq!(outbox.deliver_in(&message(&room, first_skipped + 1), &room, SlowConsumer::Drop, &metrics), Delivery::Skipped);
    assert!(!outbox.is_slow() && outbox.take_msg().is_none(), "not asked to close");
    assert_eq!(outbox.queue_depth(), 4);
    assert_eq!(metrics.slow_consumer_dropped(SlowConsumer::Drop), 2);
    let seqs = drain(&outbox, theirs, "feed");
    assert_eq!(seqs, (1..first_skipped).collect::<Vec<_>>());
}

#[test]
fn a_latest_room_keeps_its_newest_message_in_one_slot_and_delivers_it_last() {
    let metrics = Metrics::new();
    let (outbox, _ours, theirs) = outbox(4);
    let (ticker, other) = (RoomName::from("ticker"), RoomName::from("other"));
    let kept = fill(&outbox, &ticker, SlowConsumer::Latest, &metrics);
    for seq in kept + 1..kept + 50 {
        assert_eq!(outbox.deliver_in(&message(&ticker, seq), &ticker, SlowConsumer::Latest, &metrics), Delivery::Kept);
    }
    // A second room gets a slot of its own; other frames are skipped.
    assert_eq!(outbox.deliver_in(&message(&other, 1), &other, SlowConsumer::Latest, &metrics), Delivery::Kept);
    let typing = Encoded::new(ServerKind::Typing, r#"{"type":"typing","room":"ticker","user":"u","typing":true}"#);
    assert_eq!(outbox.deliver_in(&typing, &ticker, SlowConsumer::Latest, &metrics), Delivery::Skipped);
    assert!(!outbox.is_slow());
    assert_eq!(outbox.queue_depth(), 4, "slots wait outside the queue");
    assert_eq!(outbox.shared.out.lock().extra.as_ref().map(|e| e.latest.len()), Some(2), "one slot per room");
    assert_eq!((metrics.latest_replaced.get(), metrics.slow_consumer_dropped(SlowConsumer::Latest)), (49, 50));
    let seqs = drain(&outbox, theirs, "ticker");
    assert_eq!(seqs.last(), Some(&(kept + 49)), "ends on the newest: {seqs:?}");
    assert_eq!(seqs[..seqs.len() - 1], (1..kept).collect::<Vec<_>>());
    assert!(outbox.shared.out.lock().extra.as_ref().is_some_and(|e| e.latest.is_empty()));
}

#[test]
fn a_room_left_takes_its_slot_along_and_a_disconnect_frame_still_closes() {
    let metrics = Metrics::new();
    let (outbox, _ours, _theirs) = outbox(4);
    let ticker = RoomName::from("ticker");
    fill(&outbox, &ticker, SlowConsumer::Latest, &metrics);
    outbox.forget_room(&ticker);
    assert!(outbox.shared.out.lock().extra.as_ref().is_some_and(|e| e.latest.is_empty()));
    assert_eq!(outbox.deliver_in(&message(&ticker, 50), &ticker, SlowConsumer::Latest, &metrics), Delivery::Kept);
    let chat = RoomName::from("chat");
    assert_eq!(outbox.deliver_in(&message(&chat, 1), &chat, SlowConsumer::Disconnect, &metrics), Delivery::Full);
    assert!(outbox.is_slow());
    assert!(
        outbox.shared.out.lock().extra.as_ref().is_some_and(|e| e.latest.is_empty()),
        "nothing waits to go out after the close"
    );
    assert_eq!(outbox.take_msg(), Some(ConnMsg::Close { code: close::SLOW_CONSUMER, reason: close::reason(close::SLOW_CONSUMER) }));
    assert_eq!(metrics.slow_consumer_dropped(SlowConsumer::Disconnect), 1);
    // Slow now: a drop room's frame is lost with the connection, not kept.
    assert_eq!(outbox.deliver_in(&message(&ticker, 99), &ticker, SlowConsumer::Latest, &metrics), Delivery::Full);
}

#[test]
fn an_sse_stream_s_latest_slot_goes_out_with_the_id_of_its_position() {
    let metrics = Metrics::new();
    let (outbox, _ours, theirs) = outbox_over(TransportKind::Sse, 4);
    let ticker = RoomName::from("ticker");
    outbox.track(&ticker, "e".into(), 0);
    let kept = fill(&outbox, &ticker, SlowConsumer::Latest, &metrics);
    for seq in kept + 1..kept + 10 {
        outbox.deliver_in(&message(&ticker, seq), &ticker, SlowConsumer::Latest, &metrics);
    }
    let text = read_all(&outbox, theirs);
    assert_eq!(seqs_in(&text, "ticker").last(), Some(&(kept + 9)));
    let ids: Vec<&str> = text.lines().filter_map(|line| line.strip_prefix("id: ")).collect();
    assert_eq!(ids.last().copied(), Some(format!("ticker,e,{}", kept + 9).as_str()), "{ids:?}");
    assert!(ids.iter().all(|id| !id.ends_with(&format!(",{kept}"))), "no id claims a message that was skipped");
}
