//! The WebSocket transport (`GET /ws`): the connection actor runs in a
//! [`WebsocketContext`] (actix-web-actors), so it is polled only when its
//! socket can take more bytes; a client that stops reading stalls it, fills
//! its mailbox, and becomes a slow consumer. Text frames go to the
//! connection core; this module adds what is WebSocket's own: control
//! frames, fragment reassembly, close codes, and the frame-size guard.

use actix::prelude::*;
use actix_http::ws::Item;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_web_actors::ws::{self, CloseCode, CloseReason, ProtocolError, WebsocketContext};

use super::admission;
use super::{Full, Transport, TransportKind};
use crate::connection::core::Connection;
use crate::connection::Control;
use crate::metrics::Fault;
use crate::node::Node;
use crate::protocol::{close, Encoded};
use crate::transport::frame_guard::FrameGuard;

/// A WebSocket connection.
pub type WsConnection = Connection<Ws>;

/// `GET /ws`: admits the request (see [`admission`]), then upgrades. A bad
/// token still upgrades: the connection then closes with 4002, as the
/// protocol says.
pub async fn upgrade(req: HttpRequest, stream: web::Payload, node: web::Data<Node>) -> actix_web::Result<HttpResponse> {
    let node = node.into_inner();
    let admitted = match admission::admit::<Ws>(&req, &node) {
        Ok(admitted) => admitted,
        Err(refused) => return Ok(refused.response()),
    };
    let max = node.config.limits.max_message_bytes;
    let stream = FrameGuard::new(stream, max, admitted.control.clone());
    let id = node.next_conn();
    let conn = Connection::new(node, id, admitted, Ws::default());
    ws::WsResponseBuilder::new(conn, &req, stream).frame_size(max).start()
}

/// What a WebSocket connection keeps beyond the core: a fragmented message under way.
#[derive(Default)]
pub struct Ws {
    fragments: Option<Fragments>,
}

/// A fragmented message being received.
enum Fragments {
    /// Text, reassembled for the core.
    Text(Vec<u8>),
    /// Binary, already refused; only its size is counted, against the limit.
    Binary(usize),
}

impl Fragments {
    fn len(&self) -> usize {
        match self {
            Self::Text(bytes) => bytes.len(),
            Self::Binary(len) => *len,
        }
    }
}

type Ctx = WebsocketContext<WsConnection>;

impl Transport for Ws {
    type Context = Ctx;

    const KIND: TransportKind = TransportKind::WebSocket;
    const DUPLEX: bool = true;

    fn set_mailbox_capacity(ctx: &mut Ctx, capacity: usize) {
        ctx.set_mailbox_capacity(capacity);
    }

    /// Always succeeds: the context buffers what the actor writes, and the
    /// actor only runs while the socket drains that buffer.
    fn write(&mut self, ctx: &mut Ctx, frame: Encoded) -> Result<(), Full> {
        ctx.text(frame.text);
        Ok(())
    }

    fn ping(&mut self, ctx: &mut Ctx) -> Result<(), Full> {
        ctx.ping(b"");
        Ok(())
    }

    fn close(&mut self, ctx: &mut Ctx, code: u16, reason: &str) {
        ctx.close(Some(CloseReason { code: CloseCode::from(code), description: Some(reason.to_owned()) }));
        ctx.stop();
    }

    /// The actor is the response body: it stops before the socket closes.
    fn stopped(&mut self, control: &Control) {
        control.release();
    }
}

impl WsConnection {
    /// Reassembles a fragmented text message and hands it to the core;
    /// a fragmented binary message is refused once and counted to its end.
    /// Every fragment takes a rate token, and the whole message is held to
    /// `limits.max_message_bytes`.
    fn on_fragment(&mut self, item: Item, ctx: &mut Ctx) {
        let last = matches!(item, Item::Last(_));
        match (item, self.transport.fragments.as_mut()) {
            (Item::FirstText(bytes), _) => self.transport.fragments = Some(Fragments::Text(bytes.to_vec())),
            (Item::FirstBinary(bytes), _) => {
                self.transport.fragments = Some(Fragments::Binary(bytes.len()));
                self.on_unsupported(bytes.len(), ctx);
            }
            (Item::Continue(bytes) | Item::Last(bytes), Some(fragments)) => {
                match fragments {
                    Fragments::Text(buffer) => buffer.extend_from_slice(&bytes),
                    Fragments::Binary(len) => *len += bytes.len(),
                }
                if !self.admit(None, ctx) {
                    return;
                }
            }
            // A continuation with nothing under way: the codec reports it as a
            // protocol error before it gets here.
            (Item::Continue(_) | Item::Last(_), None) => return,
        }
        let max = self.node().config.limits.max_message_bytes;
        if self.transport.fragments.as_ref().is_some_and(|f| f.len() > max) {
            self.transport.fragments = None;
            self.node().metrics.frames_dropped(Fault::Size, 1);
            return self.close(ctx, close::TOO_BIG, close::TOO_BIG_REASON);
        }
        if !last {
            return;
        }
        if let Some(Fragments::Text(buffer)) = self.transport.fragments.take() {
            match String::from_utf8(buffer) {
                Ok(text) => self.on_text(&text, ctx),
                Err(_) => self.close(ctx, 1007, "invalid utf-8"),
            }
        }
    }
}

impl StreamHandler<Result<ws::Message, ProtocolError>> for WsConnection {
    fn handle(&mut self, msg: Result<ws::Message, ProtocolError>, ctx: &mut Ctx) {
        self.heard();
        self.guarded(ctx, |conn, ctx| conn.on_message(msg, ctx));
    }
}

impl WsConnection {
    fn on_message(&mut self, msg: Result<ws::Message, ProtocolError>, ctx: &mut Ctx) {
        match msg {
            Ok(ws::Message::Text(text)) => self.on_text(&text, ctx),
            Ok(ws::Message::Binary(bytes)) => self.on_unsupported(bytes.len(), ctx),
            Ok(ws::Message::Continuation(item)) => self.on_fragment(item, ctx),
            Ok(ws::Message::Ping(payload)) => ctx.pong(&payload),
            Ok(ws::Message::Pong(_)) | Ok(ws::Message::Nop) => {}
            Ok(ws::Message::Close(reason)) => {
                self.closed_by_client(reason.as_ref().map_or(1005, |r| r.code.into()));
                ctx.close(reason);
                ctx.stop();
            }
            Err(ProtocolError::Overflow) => {
                self.node().metrics.frames_dropped(Fault::Size, 1);
                self.close(ctx, close::TOO_BIG, close::TOO_BIG_REASON);
            }
            Err(_) if self.control().is_oversized() => {
                self.node().metrics.frames_dropped(Fault::Size, 1);
                self.close(ctx, close::TOO_BIG, close::TOO_BIG_REASON);
            }
            // The stream broke off (the socket was reset or ended mid-frame):
            // nobody is there to take a close frame.
            Err(ProtocolError::Io(error)) if self.control().peer_gone() => {
                tracing::debug!(conn = %self.session().id, %error, "connection lost");
                ctx.stop();
            }
            Err(error) => {
                tracing::debug!(conn = %self.session().id, %error, "websocket protocol error");
                self.close(ctx, 1002, "protocol error");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every idle connection holds one `WsConnection`; a million of them make
    /// each byte here a megabyte. Growing it is a decision, not an accident.
    #[test]
    fn connection_state_stays_small() {
        let (state, control) = (std::mem::size_of::<WsConnection>(), std::mem::size_of::<Control>());
        let sse = std::mem::size_of::<super::super::sse::SseConnection>();
        println!("WsConnection: {state} bytes, SseConnection: {sse} bytes, Control: {control} bytes");
        assert!(state <= 256, "WsConnection grew to {state} bytes");
        assert!(sse <= 256, "SseConnection grew to {sse} bytes");
        assert!(control <= 32, "Control grew to {control} bytes");
    }
}
