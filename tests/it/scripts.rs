//! The cluster's Lua scripts in a real `redis-server`: called by SHA-1, and
//! loaded again after Redis loses them.

use std::sync::Arc;
use std::time::Duration;

use fred::prelude::*;
use fred::types::{ClusterHash, CustomCommand};
use herald::cluster::backplane::Backplane;
use herald::cluster::directory::{Directory, RedisDirectory};
use herald::cluster::relay::RelayError;

use crate::support::*;

async fn command(backplane: &Backplane, name: &'static str, args: Vec<&'static str>) -> Value {
    let command = CustomCommand::new_static(name, ClusterHash::Random, false);
    backplane.client().custom(command, args).await.expect("a redis command")
}

#[tokio::test]
async fn scripts_are_called_by_sha_and_loaded_again_after_redis_loses_them() {
    let redis = RedisServer::start();
    let backplane = Arc::new(Backplane::connect(&redis.url(), WAIT).await.unwrap());
    let directory = RedisDirectory::new(backplane.clone());
    assert!(directory.heartbeat(&"node-a".into(), Duration::from_secs(30)).await.unwrap());
    directory.user_online(&"node-a".into(), &"alice".into()).await.unwrap();
    assert_eq!(directory.online(vec!["alice".into()]).await.unwrap(), vec![true]);
    let stats = command(&backplane, "INFO", vec!["commandstats"]).await.convert::<String>().unwrap();
    assert!(stats.contains("cmdstat_evalsha:calls=3"), "three calls by SHA-1: {stats}");
    assert!(!stats.contains("cmdstat_eval:"), "no script sent whole with EVAL: {stats}");

    // Redis forgets every script: the next call is refused unrun, and says
    // so; the one after it finds the scripts loaded again.
    command(&backplane, "SCRIPT", vec!["FLUSH"]).await;
    let refused = directory.user_online(&"node-a".into(), &"bob".into()).await.unwrap_err();
    assert!(matches!(refused, RelayError::Unreachable(_)), "a call Redis did not run: {refused:?}");
    directory.user_online(&"node-a".into(), &"bob".into()).await.unwrap();
    assert_eq!(directory.online(vec!["alice".into(), "bob".into()]).await.unwrap(), vec![true, true]);
}
