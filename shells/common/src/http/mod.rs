//! HTTP/1.1 and WebSocket framing: the request head parsed with httparse, the
//! WebSocket upgrade and framing done by tungstenite over in-memory buffers,
//! so both shells only move bytes between a socket and an [`HttpConn`].
//!
//! Which response a request gets is [`router`]'s decision; what the server
//! says on `/ws` is the core's signaling's. This module only frames both.

use std::collections::VecDeque;
use std::io::{self, Read, Write};

use tungstenite::protocol::{Role, WebSocket, WebSocketConfig};
use tungstenite::Message;

pub mod metrics;
pub mod router;

/// Largest request head accepted (request line and headers).
pub const MAX_HEAD: usize = 16 * 1024;
/// Largest request body accepted (WHIP and WHEP SDP); larger is answered 400 and closed.
pub const MAX_BODY: usize = 64 * 1024;
/// Largest WebSocket message accepted; the core refuses anything over its own
/// limit (64 KiB) with an `error`, and a message beyond this closes the connection.
pub const MAX_WS_MESSAGE: usize = 1 << 20;

/// The in-memory stream tungstenite reads from and writes to.
#[derive(Debug, Default)]
struct Mem {
    input: VecDeque<u8>,
    output: Vec<u8>,
}

impl Read for Mem {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.input.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.input.read(buf)
    }
}

impl Write for Mem {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.output.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Request {
    /// The method.
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// `Sec-WebSocket-Key`, if this is a WebSocket upgrade.
    pub websocket_key: Option<String>,
    /// The query, without the `?`.
    pub query: String,
    /// `Authorization`.
    pub authorization: Option<String>,
    /// `Content-Type`.
    pub content_type: Option<String>,
    /// `If-Match`.
    pub if_match: Option<String>,
    /// The body (`Content-Length` bytes; at most [`MAX_BODY`]).
    pub body: Vec<u8>,
}

/// What happened on a connection after some bytes came in.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// A complete request: answer it with [`HttpConn::respond`] or [`HttpConn::upgrade`].
    Request(Request),
    /// The request head is malformed or too large: answer 400 and close.
    BadRequest,
    /// A WebSocket text message (binary ones are passed on as lossy UTF-8).
    Text(String),
    /// The WebSocket closed (by the client, by a protocol error or an
    /// oversized message): close the connection.
    Closed,
}

enum State {
    Head(Vec<u8>),
    WebSocket(Box<WebSocket<Mem>>),
    Done,
}

/// One HTTP connection, possibly upgraded to a WebSocket.
pub struct HttpConn {
    state: State,
    /// Bytes to write to the socket.
    out: Vec<u8>,
    /// A request is being answered later ([`HttpConn::defer`]): the next is not read until then.
    deferred: bool,
    /// The client sent `Connection: close`: the connection closes after the answer.
    close_after: bool,
}

impl Default for HttpConn {
    fn default() -> Self {
        HttpConn { state: State::Head(Vec::new()), out: Vec::new(), deferred: false, close_after: false }
    }
}

impl HttpConn {
    /// Whether the connection is a WebSocket now.
    pub fn is_websocket(&self) -> bool {
        matches!(self.state, State::WebSocket(_))
    }

    /// Feeds bytes from the socket; returns what they completed.
    pub fn feed(&mut self, data: &[u8], events: &mut Vec<Event>) {
        match &mut self.state {
            State::Head(buf) => {
                buf.extend_from_slice(data);
                self.parse_head(events);
            }
            State::WebSocket(ws) => {
                ws.get_mut().input.extend(data);
                self.read_ws(events);
            }
            State::Done => {}
        }
    }

    fn parse_head(&mut self, events: &mut Vec<Event>) {
        if self.deferred {
            return;
        }
        let State::Head(buf) = &mut self.state else { return };
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(buf) {
            Ok(httparse::Status::Complete(n)) => {
                let header = |name: &str| {
                    req.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).and_then(|h| std::str::from_utf8(h.value).ok())
                };
                let upgrade = header("upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
                let websocket_key = header("sec-websocket-key").filter(|_| upgrade).map(str::to_owned);
                let length = match (header("content-length").map(|v| v.trim().parse::<usize>()), header("transfer-encoding")) {
                    (None, None) => Some(0),
                    (Some(Ok(n)), None) if n <= MAX_BODY => Some(n),
                    // Chunked bodies, bad or oversized lengths: no way to find the next request.
                    _ => None,
                };
                let Some(length) = length else {
                    self.state = State::Done;
                    events.push(Event::BadRequest);
                    return;
                };
                if buf.len() < n + length {
                    // The body is still coming.
                    return;
                }
                let (path, query) = req.path.unwrap_or("/").split_once('?').unwrap_or((req.path.unwrap_or("/"), ""));
                let request = Request {
                    method: req.method.unwrap_or("").to_owned(),
                    path: path.to_owned(),
                    websocket_key,
                    query: query.to_owned(),
                    authorization: header("authorization").map(str::to_owned),
                    content_type: header("content-type").map(str::to_owned),
                    if_match: header("if-match").map(str::to_owned),
                    body: buf[n..n + length].to_vec(),
                };
                let close_after = header("connection").is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")));
                buf.drain(..n + length);
                self.close_after = close_after;
                events.push(Event::Request(request));
            }
            Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD => {}
            _ => {
                self.state = State::Done;
                events.push(Event::BadRequest);
            }
        }
    }

    /// Answers the last request with `status` and `body`; the connection stays
    /// open for the next request unless `close`.
    pub fn respond(&mut self, status: &str, content_type: &str, body: &[u8], close: bool, events: &mut Vec<Event>) {
        self.respond_with(status, &[("Content-Type", content_type)], body, close, events);
    }

    /// Answers the last request (or the deferred one) with `status`, these
    /// `headers` (besides `Content-Length` and the connection's) and `body`.
    pub fn respond_with(&mut self, status: &str, headers: &[(&str, &str)], body: &[u8], close: bool, events: &mut Vec<Event>) {
        self.deferred = false;
        let close = close || self.close_after;
        let conn = if close { "close" } else { "keep-alive" };
        let mut head = format!("HTTP/1.1 {status}\r\n");
        for (k, v) in headers {
            // A header value never carries a line break (a name or reason from a client could).
            if !v.contains(['\r', '\n']) {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
        }
        head.push_str(&format!(
            "Content-Length: {}\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nConnection: {conn}\r\n\r\n",
            body.len()
        ));
        self.out.extend_from_slice(head.as_bytes());
        self.out.extend_from_slice(body);
        if close {
            self.state = State::Done;
        } else {
            // A pipelined request may already be buffered.
            self.parse_head(events);
        }
    }

    /// The last request is answered later, with [`HttpConn::respond_with`];
    /// requests behind it wait until then.
    pub fn defer(&mut self) {
        self.deferred = true;
    }

    /// Accepts a WebSocket upgrade with `key` (from [`Request::websocket_key`]).
    pub fn upgrade(&mut self, key: &str, events: &mut Vec<Event>) {
        let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
        let head = format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n");
        self.out.extend_from_slice(head.as_bytes());
        let rest = match std::mem::replace(&mut self.state, State::Done) {
            State::Head(buf) => buf,
            _ => Vec::new(),
        };
        let config = WebSocketConfig::default().max_message_size(Some(MAX_WS_MESSAGE)).max_frame_size(Some(MAX_WS_MESSAGE));
        let mut ws = WebSocket::from_raw_socket(Mem::default(), Role::Server, Some(config));
        ws.get_mut().input.extend(rest);
        self.state = State::WebSocket(Box::new(ws));
        self.read_ws(events);
    }

    fn read_ws(&mut self, events: &mut Vec<Event>) {
        let State::WebSocket(ws) = &mut self.state else { return };
        loop {
            match ws.read() {
                Ok(Message::Text(t)) => events.push(Event::Text(t.as_str().to_owned())),
                Ok(Message::Binary(b)) => events.push(Event::Text(String::from_utf8_lossy(&b).into_owned())),
                Ok(_) => {} // ping (answered by tungstenite), pong, close frames
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    let _ = ws.flush();
                    self.out.append(&mut ws.get_mut().output);
                    self.state = State::Done;
                    events.push(Event::Closed);
                    return;
                }
            }
        }
        let _ = ws.flush();
        self.out.append(&mut ws.get_mut().output);
    }

    /// Queues a WebSocket text message.
    pub fn send_text(&mut self, text: String) {
        if let State::WebSocket(ws) = &mut self.state {
            if ws.send(Message::text(text)).is_ok() {
                self.out.append(&mut ws.get_mut().output);
            }
        }
    }

    /// Queues a WebSocket ping (a quiet client must answer with a pong).
    pub fn send_ping(&mut self) {
        if let State::WebSocket(ws) = &mut self.state {
            if ws.send(Message::Ping(Default::default())).is_ok() {
                self.out.append(&mut ws.get_mut().output);
            }
        }
    }

    /// Whether part of a request head is waiting for the rest.
    pub fn head_pending(&self) -> bool {
        matches!(&self.state, State::Head(buf) if !buf.is_empty())
    }

    /// Takes the bytes to write to the socket.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// Whether the connection should be closed once its output is written.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_alive_requests_and_upgrade_with_pipelined_frame() {
        let mut c = HttpConn::default();
        let mut ev = Vec::new();
        c.feed(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /st", &mut ev);
        assert_eq!(ev, vec![Event::Request(Request { method: "GET".into(), path: "/healthz".into(), ..Default::default() })]);
        ev.clear();
        c.respond("200 OK", "text/plain", b"ok\n", false, &mut ev);
        assert!(String::from_utf8(c.take_output()).unwrap().ends_with("Content-Length: 3\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nConnection: keep-alive\r\n\r\nok\n"));
        c.feed(b"ats?x=1 HTTP/1.1\r\n\r\n", &mut ev);
        assert_eq!(ev, vec![Event::Request(Request { method: "GET".into(), path: "/stats".into(), query: "x=1".into(), ..Default::default() })]);
        ev.clear();
        // An upgrade, with the first (masked) frame in the same read.
        let mut req = b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".to_vec();
        let mask = [1u8, 2, 3, 4];
        req.extend_from_slice(&[0x81, 0x80 | 2]);
        req.extend_from_slice(&mask);
        req.extend(b"hi".iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        let mut c = HttpConn::default();
        c.feed(&req, &mut ev);
        let Event::Request(r) = ev.remove(0) else { panic!() };
        c.upgrade(r.websocket_key.as_deref().unwrap(), &mut ev);
        assert!(String::from_utf8_lossy(&c.take_output()).contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
        assert_eq!(ev, vec![Event::Text("hi".into())]);
        c.send_text("yo".into());
        assert_eq!(c.take_output(), vec![0x81, 2, b'y', b'o']);
    }

    #[test]
    fn oversized_head_and_bodies_are_refused() {
        let mut c = HttpConn::default();
        let mut ev = Vec::new();
        c.feed(&vec![b'a'; MAX_HEAD + 1], &mut ev);
        assert_eq!(ev, vec![Event::BadRequest]);
        let mut c = HttpConn::default();
        ev.clear();
        c.feed(format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", MAX_BODY + 1).as_bytes(), &mut ev);
        assert_eq!(ev, vec![Event::BadRequest]);
        let mut c = HttpConn::default();
        ev.clear();
        c.feed(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", &mut ev);
        assert_eq!(ev, vec![Event::BadRequest]);
    }

    #[test]
    fn a_body_is_read_whole_and_a_deferred_answer_holds_the_next_request() {
        let mut c = HttpConn::default();
        let mut ev = Vec::new();
        c.feed(b"POST /whip/r?name=x HTTP/1.1\r\nAuthorization: Bearer t\r\nContent-Type: application/sdp\r\nContent-Length: 5\r\n\r\nhel", &mut ev);
        assert!(ev.is_empty() && c.head_pending(), "the body is still coming");
        c.feed(b"loGET /healthz HTTP/1.1\r\n\r\n", &mut ev);
        let Event::Request(r) = ev.remove(0) else { panic!() };
        assert_eq!((r.method.as_str(), r.path.as_str(), r.query.as_str(), r.body.as_slice()), ("POST", "/whip/r", "name=x", &b"hello"[..]));
        assert_eq!((r.authorization.as_deref(), r.content_type.as_deref()), (Some("Bearer t"), Some("application/sdp")));
        assert!(ev.is_empty());
        c.defer();
        c.feed(b"", &mut ev);
        assert!(ev.is_empty(), "the GET waits for the deferred answer");
        c.respond_with("201 Created", &[("Location", "/whip/r/1"), ("X-Bad", "a\r\nInjected: 1")], b"sdp", false, &mut ev);
        let out = String::from_utf8(c.take_output()).unwrap();
        assert!(out.starts_with("HTTP/1.1 201 Created\r\nLocation: /whip/r/1\r\nContent-Length: 3\r\n") && !out.contains("Injected"), "{out}");
        assert!(matches!(&ev[..], [Event::Request(r)] if r.path == "/healthz"));
    }

    #[test]
    fn oversized_websocket_message_closes() {
        let mut c = HttpConn::default();
        let mut ev = Vec::new();
        c.feed(b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", &mut ev);
        ev.clear();
        c.upgrade("dGhlIHNhbXBsZSBub25jZQ==", &mut ev);
        let len = (MAX_WS_MESSAGE + 1) as u64;
        let mut frame = vec![0x81, 0x80 | 127];
        frame.extend_from_slice(&len.to_be_bytes());
        frame.extend_from_slice(&[0; 4]);
        c.feed(&frame, &mut ev);
        assert_eq!(ev, vec![Event::Closed]);
        assert!(c.is_done());
    }
}
