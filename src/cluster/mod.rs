//! Clustering: nodes that act as one, relayed through Redis pub/sub.
//!
//! - [`codec`]: the versioned envelope every node-to-node message travels in.
//! - [`backplane`]: the Redis connections, reconnecting and re-subscribing
//!   on their own.
//! - [`relay`]: the [`relay::Relay`] trait, in memory and over Redis.
//!
//! `cluster.enabled = true` is refused at start-up until the relay actor
//! that uses these is part of the supervision tree; a single node never
//! touches Redis.

pub mod backplane;
pub mod codec;
pub mod relay;
