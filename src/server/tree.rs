//! The node's supervision tree, declared: which actors it runs, in which
//! order they start, and the limits they restart within. How supervision
//! works, and the tree drawn, is in [`crate::supervisor`].

use std::sync::Arc;

use crate::cluster::{Cluster, Membership};
use crate::config::SupervisionConfig;
use crate::delivery::Registry;
use crate::link::{LinkCell, LinkHandle, Targets};
use crate::metrics::Metrics;
use crate::presence::{Presence, PresenceCell};
use crate::rooms::{Archive, Namespaces, RoomCap, RoomRegistry, ShardCell};
use crate::supervisor::{self, Child, GiveUp, StartError};

/// The handles of a started tree.
#[derive(Clone)]
pub struct Tree {
    pub rooms: RoomRegistry,
    pub presence: Presence,
    /// The cluster link, with clustering.
    pub link: Option<LinkHandle>,
}

/// What a clustered node's tree needs besides the rest.
pub struct Clustering {
    pub cluster: Arc<Membership>,
    /// The node's open connections, which broadcasts from other nodes reach.
    pub connections: Arc<Registry>,
}

/// What the rooms of a tree are made of.
pub struct RoomSetup {
    /// Room registry shards.
    pub shards: usize,
    /// `limits.max_rooms`.
    pub max_rooms: usize,
    /// Every room's history on the node.
    pub archive: Arc<Archive>,
    pub namespaces: Arc<Namespaces>,
}

impl RoomSetup {
    /// `shards` shards, at most `max_rooms` rooms, history as `archive`
    /// is configured, and no namespace.
    pub fn new(shards: usize, max_rooms: usize, archive: Arc<Archive>) -> Self {
        let config = crate::config::Config { history: archive.config().clone(), ..Default::default() };
        Self { shards, max_rooms, archive, namespaces: Arc::new(Namespaces::new(&config)) }
    }
}

/// Starts the tree: presence first (rooms report to it), then the room
/// registry shards, then the cluster link with clustering; every one
/// restarted by the root within `supervision`'s limits. Must run on the
/// actors' runtime. `give_up` is called once if the root gives up.
pub async fn start(
    rooms: RoomSetup,
    metrics: Arc<Metrics>,
    supervision: &SupervisionConfig,
    give_up: GiveUp,
    clustering: Option<Clustering>,
) -> Result<Tree, StartError> {
    let RoomSetup { shards, max_rooms, archive, namespaces } = rooms;
    let cluster = Cluster::from(clustering.as_ref().map(|c| c.cluster.clone()));
    let presence_cell = Arc::new(PresenceCell::new(metrics.clone(), cluster.clone()));
    let presence = Presence::new(presence_cell.clone());
    let cap = Arc::new(RoomCap::new(max_rooms));
    let shards: Vec<Arc<ShardCell>> = (0..shards.max(1))
        .map(|_| {
            let shard = ShardCell::new(
                presence.clone(),
                metrics.clone(),
                supervision.clone(),
                cluster.clone(),
                cap.clone(),
                archive.clone(),
                namespaces.clone(),
            );
            Arc::new(shard)
        })
        .collect();
    let rooms = RoomRegistry::new(shards.clone(), archive.clone(), namespaces);
    tokio::spawn(sweep_history(archive));
    let link = clustering.map(|c| {
        let targets = Targets { rooms: rooms.clone(), presence: presence.clone(), connections: c.connections };
        LinkCell::start(c.cluster, targets)
    });
    let mut children: Vec<Arc<dyn Child>> = vec![Arc::new(presence_cell)];
    children.extend(shards.into_iter().map(|shard| Arc::new(shard) as Arc<dyn Child>));
    if let Some(link) = &link {
        children.push(Arc::new(link.clone()));
    }
    supervisor::start(children, supervision, metrics, give_up).await?;
    Ok(Tree { rooms, presence, link: link.map(LinkHandle::new) })
}

/// Drops the history of rooms whose `history.ttl_ms` has passed, about
/// every second (a history is never read past its time, swept or not).
async fn sweep_history(archive: Arc<Archive>) {
    let every = std::time::Duration::from_millis(archive.config().ttl_ms.clamp(10, 1000));
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        archive.sweep();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::mpsc;

    use super::*;
    use crate::delivery::testing::collector;
    use crate::delivery::{ConnId, Member};
    use crate::metrics::ActorKind;

    /// Every kind of actor counted in metrics is written as a
    /// [`supervisor::Actor`], connections included.
    #[test]
    fn every_actor_kind_is_written_in_the_one_idiom() {
        use crate::connection::core::Connection;
        use crate::rooms::RoomCell;
        use crate::supervisor::{Actor, Supervised};
        use crate::transport::{sse::Sse, ws::Ws};

        fn actor<A: Actor>() -> ActorKind {
            A::KIND
        }
        fn supervised<A: Supervised>() -> ActorKind {
            A::KIND
        }
        let written = [
            actor::<Connection<Ws>>(),
            actor::<Connection<Sse>>(),
            supervised::<Arc<RoomCell>>(),
            supervised::<Arc<ShardCell>>(),
            supervised::<Arc<PresenceCell>>(),
            supervised::<Arc<LinkCell>>(),
        ];
        for kind in ActorKind::ALL {
            assert!(written.contains(&kind), "{} is not written as an Actor", kind.as_str());
        }
    }

    async fn tree(max_restarts: u32) -> (Tree, Arc<Metrics>, mpsc::UnboundedReceiver<String>) {
        let metrics = Arc::new(Metrics::new());
        let (tx, rx) = mpsc::unbounded_channel();
        let supervision = SupervisionConfig { max_restarts, window_ms: 60_000 };
        let give_up: GiveUp = Arc::new(move |reason| {
            let _ = tx.send(reason);
        });
        let archive = Arc::new(Archive::new(Default::default(), metrics.clone()));
        let tree = start(RoomSetup::new(2, usize::MAX, archive), metrics.clone(), &supervision, give_up, None).await.unwrap();
        (tree, metrics, rx)
    }

    /// Waits until `done` holds, for at most two seconds.
    async fn until(done: impl Fn() -> bool) {
        for _ in 0..200 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("condition not reached");
    }

    /// [`until`], for a condition that has to ask an actor.
    async fn until_async<F: std::future::Future<Output = bool>>(done: impl Fn() -> F) {
        for _ in 0..200 {
            if done().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("condition not reached");
    }

    fn restarts(metrics: &Metrics, kind: ActorKind) -> String {
        let text = metrics.render();
        let series = format!("herald_actor_restarts_total{{actor=\"{}\"}} ", kind.as_str());
        text.lines().find_map(|l| l.strip_prefix(&series)).unwrap_or("missing").to_owned()
    }

    #[actix_web::test]
    async fn the_root_restarts_presence_over_its_state_then_gives_up_past_the_limit() {
        let (tree, metrics, mut gave_up) = tree(1).await;
        let (outbox, _) = collector(8);
        tree.presence.online(Member { conn: ConnId(1), user: "alice".into(), outbox });
        tree.presence.room_joined("hall".into(), "alice".into());

        let first = tree.presence.crash().unwrap();
        until(|| tree.presence.actor().is_some_and(|now| now != first)).await;
        assert_eq!(restarts(&metrics, ActorKind::Presence), "1");
        let status = tree.presence.status(vec!["alice".into()]).await.unwrap();
        assert!(status["alice"], "the restarted registry still knows alice");
        assert_eq!(tree.presence.room_users("hall".into()).await.unwrap(), ["alice"]);
        assert!(gave_up.try_recv().is_err(), "one restart is within the limit");

        tree.presence.crash().unwrap();
        let reason = tokio::time::timeout(Duration::from_secs(2), gave_up.recv()).await.unwrap().unwrap();
        assert!(reason.contains("presence"), "{reason}");
        assert_eq!(restarts(&metrics, ActorKind::Presence), "1", "no restart past the limit");
    }

    #[actix_web::test]
    async fn a_shard_restarts_its_rooms_then_escalates_to_the_root() {
        let (tree, metrics, mut gave_up) = tree(1).await;
        let (outbox, frames) = collector(64);
        let member = Member { conn: ConnId(1), user: "alice".into(), outbox };
        let (room, _) = tree.rooms.join("r".into(), member, None, None).await.unwrap();
        let shard = tree.rooms.shard_actor("r").unwrap();

        // Within the shard's limit: the room restarts, the shard stays.
        let first = tree.rooms.crash_room("r").await.unwrap();
        until_async(|| async { tree.rooms.room_life("r").await.is_some_and(|now| now != first) }).await;
        assert_eq!(restarts(&metrics, ActorKind::Room), "1");
        assert_eq!(tree.rooms.shard_actor("r"), Some(shard));

        // Past it: the shard fails, the root restarts it, and the new shard
        // starts the room again over the same members.
        let second = tree.rooms.crash_room("r").await.unwrap();
        until(|| tree.rooms.shard_actor("r").is_some_and(|now| now != shard)).await;
        until_async(|| async { tree.rooms.room_life("r").await.is_some_and(|now| now != second) }).await;
        assert_eq!(restarts(&metrics, ActorKind::Room), "1");
        assert_eq!(restarts(&metrics, ActorKind::Registry), "1");
        assert!(gave_up.try_recv().is_err(), "the root's own limit is not reached");

        frames.lock().clear();
        let data = serde_json::value::RawValue::from_string("1".into()).unwrap();
        room.publish(ConnId(1), "alice".into(), &data, true, None);
        until(|| frames.lock().iter().any(|f| f.contains(r#""seq":1"#))).await;
    }

    #[actix_web::test]
    async fn what_is_sent_while_an_actor_dies_waits_for_the_next_one() {
        let (tree, metrics, _) = tree(5).await;
        let (outbox, _) = collector(8);
        tree.presence.online(Member { conn: ConnId(1), user: "alice".into(), outbox });
        tree.presence.room_joined("hall".into(), "alice".into());
        // Queued right behind the fatal message, before any restart.
        let first = tree.presence.crash().unwrap();
        tree.presence.offline("alice".into(), ConnId(1));
        tree.presence.room_left("hall".into(), "alice".into());
        tree.presence.room_joined("hall".into(), "bob".into());
        let status = tree.presence.status(vec!["alice".into()]).await.unwrap();
        assert!(!status["alice"], "the offline after the crash was applied");
        assert_eq!(tree.presence.room_users("hall".into()).await.unwrap(), ["bob"]);
        assert_ne!(tree.presence.actor(), Some(first));
        assert_eq!(restarts(&metrics, ActorKind::Presence), "1");

        // The same for a room: a leave queued behind the crash still lands.
        let (a, _) = collector(8);
        let (b, b_frames) = collector(8);
        tree.rooms.join("r".into(), Member { conn: ConnId(2), user: "a".into(), outbox: a }, None, None).await.unwrap();
        tree.rooms.join("r".into(), Member { conn: ConnId(3), user: "b".into(), outbox: b }, None, None).await.unwrap();
        tree.rooms.crash_room("r").await.unwrap();
        tree.rooms.leave("r".into(), ConnId(2));
        until(|| b_frames.lock().iter().any(|f| f.contains("user_left"))).await;
        assert_eq!(restarts(&metrics, ActorKind::Room), "1");
    }
}
