//! Worker threads, end to end: each server binary with `--workers 4` on
//! loopback. TURN clients are spread over the workers by the kernel
//! (SO_REUSEPORT); what must agree across them (quotas, nonces, `/stats`, the
//! stop report) does; and a burst that fits the (default, large) socket
//! buffer is not lost. Driven by coturn's turnutils_uclient and by a minimal
//! STUN/TURN client on the core's public encoders.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use switchboard_core::stun::message::{append_attribute, append_fingerprint, append_integrity};
use switchboard_core::stun::view::{attr, method, Class, StunView, MAGIC_COOKIE};
use switchboard_core::turn::auth::long_term_key;
use switchboard_tests::{peer, require, run, uclient_totals, Server, SERVERS};

const USER: &str = "alice";
const PASS: &str = "wonderland-2718";
const WORKERS: &str = "4";

/// A UDP client socket with a short timeout.
fn client() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s
}

/// The server's challenge: (realm, nonce).
type Challenge = (String, String);

/// Sends a request and returns the response to it (same transaction id).
fn exchange(s: &UdpSocket, server: SocketAddr, req: &[u8]) -> Vec<u8> {
    s.send_to(req, server).unwrap();
    let mut buf = [0u8; 2048];
    loop {
        let (n, _) = s.recv_from(&mut buf).expect("a response from the server");
        if n >= 20 && buf[8..20] == req[8..20] {
            return buf[..n].to_vec();
        }
    }
}

/// An Allocate request (UDP relay), authenticated when `auth` is given.
fn allocate_request(tid: [u8; 12], auth: Option<&Challenge>) -> Vec<u8> {
    let mut b = Vec::with_capacity(160);
    b.extend_from_slice(&method::ALLOCATE.to_be_bytes());
    b.extend_from_slice(&[0, 0]);
    b.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
    b.extend_from_slice(&tid);
    append_attribute(&mut b, attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
    if let Some((realm, nonce)) = auth {
        append_attribute(&mut b, attr::USERNAME, USER.as_bytes());
        append_attribute(&mut b, attr::REALM, realm.as_bytes());
        append_attribute(&mut b, attr::NONCE, nonce.as_bytes());
        append_integrity(&mut b, &long_term_key(USER, realm, PASS));
        append_fingerprint(&mut b);
    }
    b
}

/// The error code of a response, or `None` for a success.
fn error_code(resp: &[u8]) -> Option<u16> {
    let v = StunView::new_checked(resp).expect("a well-formed response");
    if v.class() == Class::Success {
        return None;
    }
    v.find(attr::ERROR_CODE).map(|e| u16::from(e[2]) * 100 + u16::from(e[3]))
}

fn tid(n: u32) -> [u8; 12] {
    let mut t = [7u8; 12];
    t[..4].copy_from_slice(&n.to_be_bytes());
    t
}

/// Asks for an allocation unauthenticated and returns the challenge of the 401.
fn challenge(s: &UdpSocket, server: SocketAddr, n: u32) -> Challenge {
    let r = exchange(s, server, &allocate_request(tid(n), None));
    assert_eq!(error_code(&r), Some(401));
    let v = StunView::new_checked(&r).unwrap();
    let text = |t| String::from_utf8(v.find(t).expect("REALM and NONCE in a 401").to_vec()).unwrap();
    (text(attr::REALM), text(attr::NONCE))
}


/// Per worker, the value of `key` in `/stats`' `workers` list.
fn per_worker(v: &serde_json::Value, key: &str) -> Vec<u64> {
    v["workers"].as_array().unwrap().iter().map(|w| w[key].as_u64().unwrap()).collect()
}

fn server(bin: &str, extra: &[&str]) -> Server {
    let user = format!("{USER}:{PASS}");
    let mut args = vec!["--workers", WORKERS, "--user", &user, "--allow-loopback-peers"];
    args.extend_from_slice(extra);
    Server::start(bin, &args)
}

fn turn_addr(s: &Server) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], s.port))
}

#[test]
fn sixty_four_clients_spread_over_the_workers_all_relay_and_stats_add_up() {
    require("turnutils_uclient");
    for bin in SERVERS {
        let s = server(bin, &[]);
        let (_peer, pp) = peer();
        let (p, sp) = (pp.to_string(), s.port.to_string());
        let args: Vec<String> = ["-u", USER, "-w", PASS, "-e", "127.0.0.1", "-r", &p, "-X", "-n", "20", "-m", "64", "-l", "160", "-p", &sp, "127.0.0.1"]
            .map(String::from)
            .to_vec();
        let r = run("turnutils_uclient", &args, Duration::from_secs(60));
        assert_eq!(r.status.map(|s| s.success()), Some(true), "{bin}: uclient failed\n{}\n{}", r.output, s.proc.stderr());
        let t = uclient_totals(&r.output).unwrap_or_else(|| panic!("{bin}: no totals in\n{}", r.output));
        assert_eq!((t.sent, t.received, t.lost), (64 * 20, 64 * 20, 0), "{bin}\n{}", r.output);
        let v = s.stats();
        let relayed = per_worker(&v, "relayed_packets");
        assert_eq!(relayed.len(), 4, "{bin}: {v}");
        assert!(relayed.iter().filter(|&&n| n > 0).count() >= 2, "{bin}: the kernel put every client on one worker: {relayed:?}");
        assert_eq!(relayed.iter().sum::<u64>(), v["relayed_packets"].as_u64().unwrap(), "{bin}: /stats sums the workers");
        assert_eq!(v["relayed_packets"].as_u64(), Some(2 * 64 * 20), "{bin}: each message relayed there and back");
        let created = v["turn"]["allocations_created"].as_u64().unwrap();
        assert!(created >= 64, "{bin}: {created} allocations for 64 clients");
    }
}

#[test]
fn a_user_quota_holds_across_workers() {
    for bin in SERVERS {
        let s = server(bin, &["--user-quota", "3"]);
        let addr = turn_addr(&s);
        // 24 clients: the kernel spreads them over the 4 workers; 3 may allocate, whichever worker they are on.
        let (mut admitted, mut refused) = (0, 0);
        let mut keep = Vec::new();
        for i in 0..24 {
            let c = client();
            let ch = challenge(&c, addr, 2 * i);
            match error_code(&exchange(&c, addr, &allocate_request(tid(2 * i + 1), Some(&ch)))) {
                None => admitted += 1,
                Some(486) => refused += 1,
                Some(code) => panic!("{bin}: Allocate answered {code}"),
            }
            keep.push(c);
        }
        assert_eq!((admitted, refused), (3, 21), "{bin}");
        let v = s.stats();
        let requests = per_worker(&v, "turn_requests");
        assert!(requests.iter().filter(|&&n| n > 0).count() >= 2, "{bin}: clients all on one worker: {requests:?}");
        assert_eq!(v["allocations"].as_u64(), Some(3), "{bin}: {v}");
        assert_eq!(per_worker(&v, "allocations").iter().sum::<u64>(), 3, "{bin}");
    }
}

/// Sends a STUN request on a TCP connection and reads the response.
fn exchange_tcp(s: &mut std::net::TcpStream, req: &[u8]) -> Vec<u8> {
    use std::io::{Read, Write};
    s.write_all(req).unwrap();
    let mut head = [0u8; 20];
    s.read_exact(&mut head).expect("a response header");
    let mut resp = head.to_vec();
    resp.resize(20 + usize::from(u16::from_be_bytes([head[2], head[3]])), 0);
    s.read_exact(&mut resp[20..]).expect("the response body");
    resp
}

/// The one worker whose `key` grew between two `/stats`.
fn which_grew(before: &[u64], after: &[u64]) -> usize {
    let grew: Vec<usize> = (0..after.len()).filter(|&i| after[i] > before[i]).collect();
    assert_eq!(grew.len(), 1, "{before:?} -> {after:?}");
    grew[0]
}

#[test]
fn a_nonce_from_one_worker_is_accepted_by_another() {
    for bin in SERVERS {
        let s = server(bin, &[]);
        let addr = turn_addr(&s);
        // A nonce is bound to the client's address (IP and port), not its transport, and the kernel spreads UDP
        // and TCP over the workers independently: a client address asks for a nonce over UDP and uses it over
        // TCP, from the same port. Seen in /stats: which worker issued it, which accepted it.
        let mut crossed = 0;
        let mut keep = Vec::new();
        for i in 0..8 {
            let udp = client();
            let port = udp.local_addr().unwrap().port();
            let before = per_worker(&s.stats(), "turn_requests");
            let ch = challenge(&udp, addr, 2 * i);
            let issued = which_grew(&before, &per_worker(&s.stats(), "turn_requests"));
            let mut tcp = switchboard_tests::connect_from(SocketAddr::from(([127, 0, 0, 1], port)), addr);
            tcp.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let before = per_worker(&s.stats(), "allocations");
            let r = exchange_tcp(&mut tcp, &allocate_request(tid(2 * i + 1), Some(&ch)));
            assert_eq!(error_code(&r), None, "{bin}: the nonce worker {issued} issued was refused over TCP");
            let accepted = which_grew(&before, &per_worker(&s.stats(), "allocations"));
            crossed += usize::from(accepted != issued);
            keep.push((udp, tcp));
        }
        // With 4 workers, 8 pairs all landing twice on the same worker would be a 1 in 65,536 chance.
        assert!(crossed > 0, "{bin}: every nonce was used on the worker that issued it; nothing was shown");
    }
}

#[test]
fn idle_workers_sleep_and_sigterm_stops_them_all_releasing_allocations() {
    for bin in SERVERS {
        let mut s = server(bin, &[]);
        let addr = turn_addr(&s);
        let mut keep = Vec::new();
        for i in 0..12 {
            let c = client();
            let ch = challenge(&c, addr, 2 * i);
            assert_eq!(error_code(&exchange(&c, addr, &allocate_request(tid(2 * i + 1), Some(&ch)))), None, "{bin}");
            keep.push(c);
        }
        let held = per_worker(&s.stats(), "allocations");
        assert!(held.iter().filter(|&&n| n > 0).count() >= 2, "{bin}: {held:?}");
        // Allocations make timers pending on several workers: idle, the process still sleeps.
        let before = s.proc.cpu_ticks();
        let t = Instant::now();
        std::thread::sleep(Duration::from_secs(3));
        let used = s.proc.cpu_ticks() - before;
        let wall_ticks = t.elapsed().as_millis() as u64 / 10;
        assert!(used * 50 <= wall_ticks, "{bin}: 4 idle workers used {used} of {wall_ticks} ticks (over 2%)");
        s.proc.signal("TERM");
        let st = s.proc.wait(Duration::from_secs(10)).unwrap_or_else(|| panic!("{bin} did not stop on SIGTERM"));
        assert!(st.success(), "{bin}: exit {st}\n{}", s.proc.stderr());
        let log = s.proc.stderr();
        let line = log.lines().find(|l| l.contains(" stopped ")).unwrap_or_else(|| panic!("{bin}: no stop report\n{log}"));
        assert!(line.contains("workers=4") && line.contains("allocations_released=12") && line.contains("relays_open=0"), "{bin}: {line}");
    }
}

#[test]
fn a_burst_that_fits_the_socket_buffer_is_not_lost() {
    // The server asks for 4 MiB socket buffers by default; the kernel grants up to net.core.rmem_max. A burst of
    // Binding requests sent at once, far faster than one worker answers, waits in that buffer: every one is
    // answered. A small datagram takes about 1 KiB of buffer (the kernel counts its bookkeeping too). With the
    // kernel's default buffers (`--udp-buffer 0`) this fails: 1,744 of 2,000 were lost when tried.
    let rmem_max: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max").unwrap().trim().parse().unwrap();
    let burst = (rmem_max.min(4 << 20) / 2048).min(2000);
    for bin in SERVERS {
        let s = Server::start(bin, &["--workers", "1"]);
        let c = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
        c.set_recv_buffer_size(4 << 20).unwrap();
        c.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
        let c: UdpSocket = c.into();
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let server = turn_addr(&s);
        for i in 0..burst {
            let mut req = vec![0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42];
            req.extend_from_slice(&tid(i as u32));
            c.send_to(&req, server).unwrap();
        }
        let mut answered = 0;
        let mut buf = [0u8; 1500];
        while answered < burst && c.recv_from(&mut buf).is_ok() {
            answered += 1;
        }
        assert_eq!(answered, burst, "{bin}: {} of a burst of {burst} Binding requests lost (rmem_max {rmem_max})", burst - answered);
    }
}
