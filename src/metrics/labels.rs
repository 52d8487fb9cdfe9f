//! The label values of Herald's metrics: each a small fixed set, so every
//! labelled child is resolved once at start-up.

/// Why a connection was refused before it opened: the `reason` label of `herald_connections_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `limits.max_connections` reached (503).
    MaxConnections,
    /// `Origin` not in `server.allowed_origins` (403).
    Origin,
    /// The node is draining for shutdown (503).
    Draining,
}

impl Refusal {
    pub const ALL: [Refusal; 3] = [Self::MaxConnections, Self::Origin, Self::Draining];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::MaxConnections => "max_connections",
            Self::Origin => "origin",
            Self::Draining => "draining",
        }
    }
}

/// Why a join was refused: the `reason` label of `herald_joins_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinRefusal {
    /// The user may not join the room (`FORBIDDEN`).
    Forbidden,
    /// The connection is in `limits.max_rooms_per_conn` rooms (`TOO_MANY_ROOMS`).
    MaxRoomsPerConn,
    /// The node holds `limits.max_rooms` rooms and the join would create one more (`TOO_MANY_ROOMS`).
    MaxRooms,
}

impl JoinRefusal {
    pub const ALL: [JoinRefusal; 3] = [Self::Forbidden, Self::MaxRoomsPerConn, Self::MaxRooms];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Forbidden => "forbidden",
            Self::MaxRoomsPerConn => "max_rooms_per_conn",
            Self::MaxRooms => "max_rooms",
        }
    }
}

/// Why messages left a room's history: the `reason` label of
/// `herald_history_evictions_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eviction {
    /// The room held `history.size` messages already.
    Size,
    /// `history.ttl_ms` passed since the room's last publish.
    Ttl,
    /// The node held `history.max_bytes` of history already (the oldest message went).
    MaxBytes,
}

impl Eviction {
    pub const ALL: [Eviction; 3] = [Self::Size, Self::Ttl, Self::MaxBytes];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Size => "size",
            Self::Ttl => "ttl",
            Self::MaxBytes => "max_bytes",
        }
    }
}

/// Why the server ended a connection for something its client did or did
/// not do: the `reason` label of `herald_connections_dropped_total`. The
/// first three also drop frames: the `reason` label of `herald_frames_dropped_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Too many rate-limited frames in a row (close 1008); a frame: refused with `RATE_LIMITED`.
    RateLimit,
    /// A message over `limits.max_message_bytes` (close 1009).
    Size,
    /// The outbound queue overflowed (close 4008); a frame: not queued to it.
    SlowConsumer,
    /// Nothing heard for `heartbeat.timeout_ms`.
    Heartbeat,
    /// No valid authentication: a bad token (4002), none in time (4001), or
    /// a frame before it (4003).
    Auth,
}

impl Fault {
    pub const ALL: [Fault; 5] = [Self::RateLimit, Self::Size, Self::SlowConsumer, Self::Heartbeat, Self::Auth];
    /// The faults that drop frames, in the order of `herald_frames_dropped_total`'s children.
    pub const FRAME: [Fault; 3] = [Self::RateLimit, Self::Size, Self::SlowConsumer];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::RateLimit => "rate_limit",
            Self::Size => "size",
            Self::SlowConsumer => "slow_consumer",
            Self::Heartbeat => "heartbeat",
            Self::Auth => "auth",
        }
    }
}

/// The close codes `herald_connections_closed_total` counts one by one; any
/// other is `other`. 1006 stands for a connection that ended without a close
/// code: its client vanished, its socket was shut, or an SSE client left.
pub(crate) const CLOSE_CODES: [u16; 13] = [1000, 1001, 1002, 1005, 1006, 1007, 1008, 1009, 1011, 4001, 4002, 4003, 4008];

/// The code of a connection that ended without one.
pub(crate) const NO_CLOSE_CODE: u16 = 1006;

/// Where a published message came from: the `source` label of `herald_messages_published_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A client's `publish` frame.
    Client,
    /// `POST /api/publish`.
    Api,
}

impl Source {
    pub const ALL: [Source; 2] = [Self::Client, Self::Api];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Api => "api",
        }
    }
}

/// A kind of actor: the `actor` label of `herald_actor_failures_total`,
/// `herald_actor_restarts_total` and `herald_actor_mailbox_backlog`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActorKind {
    Room,
    /// A room registry shard.
    Registry,
    Presence,
    Connection,
    /// The cluster link.
    Cluster,
}

impl ActorKind {
    pub const ALL: [ActorKind; 5] = [Self::Room, Self::Registry, Self::Presence, Self::Connection, Self::Cluster];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Room => "room",
            Self::Registry => "registry",
            Self::Presence => "presence",
            Self::Connection => "connection",
            Self::Cluster => "cluster",
        }
    }
}

/// An HTTP status reduced to its class: the `status` label of `herald_api_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StatusClass {
    Success,
    ClientError,
    ServerError,
}

impl StatusClass {
    pub(crate) const ALL: [StatusClass; 3] = [Self::Success, Self::ClientError, Self::ServerError];

    /// The class of `status`; informational and redirect codes, which the API
    /// never answers, count as success.
    pub(crate) fn of(status: u16) -> Self {
        match status {
            500.. => Self::ServerError,
            400..=499 => Self::ClientError,
            _ => Self::Success,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Success => "2xx",
            Self::ClientError => "4xx",
            Self::ServerError => "5xx",
        }
    }
}

/// Which transport carries a connection: the `transport` label of the
/// connection metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    WebSocket,
    Sse,
    /// Socket.IO (`/socket.io/`), over WebSocket or HTTP long polling.
    SocketIo,
}

impl TransportKind {
    pub const ALL: [TransportKind; 3] = [Self::WebSocket, Self::Sse, Self::SocketIo];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::WebSocket => "ws",
            Self::Sse => "sse",
            Self::SocketIo => "socketio",
        }
    }

    /// Whether the client sends frames and answers pings. A connection that
    /// cannot be heard from is never closed for silence; a dead peer shows
    /// up as the end of its stream or a failed write instead.
    pub fn is_duplex(self) -> bool {
        self != Self::Sse
    }

    /// The heartbeat, as this transport writes it.
    pub fn ping(self) -> bytes::Bytes {
        match self {
            Self::WebSocket => bytes::Bytes::from_static(crate::protocol::framing::WS_PING),
            Self::Sse => bytes::Bytes::from_static(crate::protocol::framing::SSE_PING),
            // Engine.IO's ping packet, over a WebSocket (see `crate::socketio`).
            Self::SocketIo => bytes::Bytes::from_static(b"\x81\x012"),
        }
    }
}

/// The API's routes as templates: the `route` label of `herald_api_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiRoute {
    Publish,
    Direct,
    Broadcast,
    RoomPresence,
    RoomHistory,
    UserStatus,
    Stats,
    /// `POST /api/debug/crash`, with `debug.fault_injection` on.
    DebugCrash,
    /// `POST /api/debug/stall`, with `debug.fault_injection` on.
    DebugStall,
    /// Any path under `/api` that is not one of the above.
    Other,
}

impl ApiRoute {
    pub const ALL: [ApiRoute; 10] = [
        Self::Publish,
        Self::Direct,
        Self::Broadcast,
        Self::RoomPresence,
        Self::RoomHistory,
        Self::UserStatus,
        Self::Stats,
        Self::DebugCrash,
        Self::DebugStall,
        Self::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Publish => "/api/publish",
            Self::Direct => "/api/direct",
            Self::Broadcast => "/api/broadcast",
            Self::RoomPresence => "/api/rooms/{room}/presence",
            Self::RoomHistory => "/api/rooms/{room}/history",
            Self::UserStatus => "/api/users/{user}/status",
            Self::Stats => "/api/stats",
            Self::DebugCrash => "/api/debug/crash",
            Self::DebugStall => "/api/debug/stall",
            Self::Other => "other",
        }
    }

    /// The route a request path falls under, whatever its method.
    pub fn of(path: &str) -> Self {
        let segments: Vec<&str> = path.trim_start_matches("/api/").split('/').collect();
        match segments.as_slice() {
            ["publish"] => Self::Publish,
            ["direct"] => Self::Direct,
            ["broadcast"] => Self::Broadcast,
            ["stats"] => Self::Stats,
            ["debug", "crash"] => Self::DebugCrash,
            ["debug", "stall"] => Self::DebugStall,
            ["rooms", room, "presence"] if !room.is_empty() => Self::RoomPresence,
            ["rooms", room, "history"] if !room.is_empty() => Self::RoomHistory,
            ["users", user, "status"] if !user.is_empty() => Self::UserStatus,
            _ => Self::Other,
        }
    }
}
