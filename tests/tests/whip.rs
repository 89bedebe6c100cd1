//! WHIP and WHEP over real HTTP against each binary (raw TCP): what a client
//! that is refused sees. The media side (a browser publishing over WHIP, a
//! WHEP player, DELETE, a vanished publisher) is browser check 13; the session
//! logic is unit-tested in the core (`whip::tests`, the lab's
//! `whip_publishers_and_whep_viewers_share_the_room`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use switchboard_tests::{bin, run, Server, SERVERS};

/// One request on a fresh connection: (status line, head, body).
fn request(s: &Server, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (String, String, String) {
    let mut tcp = TcpStream::connect(("127.0.0.1", s.http_port)).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    tcp.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = tcp.read_to_string(&mut out);
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    (head.lines().next().unwrap_or("").to_owned(), head.to_owned(), body.to_owned())
}

#[test]
fn refusals_have_the_status_and_the_reason_a_client_needs() {
    for name in SERVERS {
        let s = Server::start(name, &["--whip-token", "tok", "--static-auth-secret", "s3cret"]);
        let sdp = [("Content-Type", "application/sdp")];
        // No token, a wrong one: 401 with WWW-Authenticate, and CORS so a page can read it.
        let (status, head, _) = request(&s, "POST", "/whip/room", &sdp, "v=0\r\n");
        assert!(status.contains("401"), "{name}: {status}");
        assert!(head.contains("WWW-Authenticate: Bearer") && head.contains("Access-Control-Allow-Origin: *"), "{name}: {head}");
        let bad = [("Content-Type", "application/sdp"), ("Authorization", "Bearer nope")];
        assert!(request(&s, "POST", "/whep/room", &bad, "v=0\r\n").0.contains("401"), "{name}");
        // A token from `switchboard token` with the same secret is taken: the garbage offer gets 400 with the reason.
        let r = run(&bin(name).display().to_string(), &["token".into(), "--static-auth-secret".into(), "s3cret".into(), "--ttl".into(), "60".into()], Duration::from_secs(10));
        let token = r.output.trim().lines().last().unwrap_or_default().to_owned();
        assert!(token.contains(':'), "{name}: token {:?}", r.output);
        let rest = format!("Bearer {token}");
        let good = [("Content-Type", "application/sdp"), ("Authorization", rest.as_str())];
        let (status, _, body) = request(&s, "POST", "/whip/room", &good, "this is not SDP");
        assert!(status.contains("400") && body.contains("not an SDP offer"), "{name}: {status} {body}");
        let (status, _, body) = request(&s, "POST", "/whip/room", &[("Authorization", "Bearer tok"), ("Content-Type", "text/plain")], "v=0\r\n");
        assert!(status.contains("415") && body.contains("application/sdp"), "{name}: {status} {body}");
        // A session that does not exist, a method a session does not take.
        assert!(request(&s, "DELETE", "/whip/room/0123456789abcdef", &[("Authorization", "Bearer tok")], "").0.contains("404"), "{name}");
        assert!(request(&s, "GET", "/whip/room", &[("Authorization", "Bearer tok")], "").0.contains("405"), "{name}");
        // The CORS preflight needs no token.
        let (status, head, _) = request(&s, "OPTIONS", "/whep/room", &[("Origin", "http://elsewhere"), ("Access-Control-Request-Method", "POST")], "");
        assert!(status.contains("204") && head.contains("Access-Control-Allow-Headers: Authorization, Content-Type, If-Match"), "{name}: {head}");
        // Recording: a server without --record-dir has nothing to list; recording a room nobody is in is 404.
        assert!(request(&s, "GET", "/recordings?token=tok", &[], "").0.contains("404"), "{name}");
        assert!(request(&s, "POST", "/recordings/room?on=1", &[("Authorization", "Bearer tok")], "").0.contains("404"), "{name}");
        // The server goes on.
        assert!(request(&s, "GET", "/healthz", &[], "").0.contains("200"), "{name}");
        let st: serde_json::Value = serde_json::from_str(&request(&s, "GET", "/stats", &[], "").2).unwrap();
        assert_eq!((st["whip"]["unauthorized"].as_u64(), st["whip"]["whip_sessions"].as_u64()), (Some(2), Some(0)), "{name}: {}", st["whip"]);
    }
}
