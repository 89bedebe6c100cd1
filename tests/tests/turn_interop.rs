//! STUN/TURN interop: each server binary on loopback, driven by coturn's own
//! clients (turnutils_stunclient, turnutils_uclient, turnutils_peer).

use std::time::Duration;

use switchboard_tests::{assert_all_relayed, peer, require, run, uclient, uclient_totals, Server, SERVERS};

const USER: &str = "alice";
const PASS: &str = "wonderland-2718";
const SECRET: &str = "rest-secret-31415";

fn static_user_server(bin: &str) -> Server {
    let user = format!("{USER}:{PASS}");
    Server::start(bin, &["--user", &user, "--allow-loopback-peers"])
}

#[test]
fn stunclient_gets_its_reflexive_address() {
    require("turnutils_stunclient");
    for bin in SERVERS {
        let s = Server::start(bin, &[]);
        let r = run("turnutils_stunclient", &["-p".into(), s.port.to_string(), "127.0.0.1".into()], Duration::from_secs(20));
        assert_eq!(r.status.map(|s| s.success()), Some(true), "{bin}: {}", r.output);
        assert!(r.output.contains("UDP reflexive addr: 127.0.0.1:"), "{bin}: {}", r.output);
    }
}

#[test]
fn uclient_udp_channels_static_user() {
    for bin in SERVERS {
        let s = static_user_server(bin);
        let (_peer, pp) = peer();
        let r = uclient(s.port, pp, &["-u", USER, "-w", PASS]);
        assert_all_relayed(&s, &r, &format!("{bin} udp channels"));
    }
}

#[test]
fn uclient_udp_send_indications_static_user() {
    for bin in SERVERS {
        let s = static_user_server(bin);
        let (_peer, pp) = peer();
        let r = uclient(s.port, pp, &["-s", "-u", USER, "-w", PASS]);
        assert_all_relayed(&s, &r, &format!("{bin} udp send indications"));
    }
}

#[test]
fn uclient_tcp_channels_static_user() {
    for bin in SERVERS {
        let s = static_user_server(bin);
        let (_peer, pp) = peer();
        let r = uclient(s.port, pp, &["-t", "-u", USER, "-w", PASS]);
        assert_all_relayed(&s, &r, &format!("{bin} tcp channels"));
    }
}

#[test]
fn uclient_tcp_send_indications_static_user() {
    for bin in SERVERS {
        let s = static_user_server(bin);
        let (_peer, pp) = peer();
        let r = uclient(s.port, pp, &["-t", "-s", "-u", USER, "-w", PASS]);
        assert_all_relayed(&s, &r, &format!("{bin} tcp send indications"));
    }
}

/// The suite above runs with the default workers (one per core); the relay cases again with 1 and with 4.
#[test]
fn uclient_relays_with_one_worker_and_with_four() {
    for bin in SERVERS {
        for workers in ["1", "4"] {
            let user = format!("{USER}:{PASS}");
            let s = Server::start(bin, &["--workers", workers, "--user", &user, "--allow-loopback-peers"]);
            let (_peer, pp) = peer();
            for (what, extra) in [("udp channels", &[][..]), ("udp send indications", &["-s"]), ("tcp channels", &["-t"]), ("tcp send indications", &["-t", "-s"])] {
                let mut args = extra.to_vec();
                args.extend(["-u", USER, "-w", PASS]);
                let r = uclient(s.port, pp, &args);
                assert_all_relayed(&s, &r, &format!("{bin} --workers {workers} {what}"));
            }
        }
    }
}

#[test]
fn max_bps_limits_what_one_allocation_relays() {
    for bin in SERVERS {
        let user = format!("{USER}:{PASS}");
        // 2,000 bytes/s each way; uclient sends 4 x 100 x 160 bytes as fast as it can.
        let s = Server::start(bin, &["--user", &user, "--allow-loopback-peers", "--max-bps", "2000"]);
        let (_peer, pp) = peer();
        let r = uclient(s.port, pp, &["-u", USER, "-w", PASS]);
        let t = uclient_totals(&r.output).unwrap_or_else(|| panic!("{bin}: no totals in\n{}", r.output));
        assert!(t.received < t.sent / 2, "{bin}: {} of {} came back through a 2,000 bytes/s allocation", t.received, t.sent);
        let v = s.stats();
        assert!(v["turn"]["dropped_rate_limited"].as_u64() > Some(0), "{bin}: {}", v["turn"]);
    }
}

#[test]
fn uclient_rest_credentials_udp_and_tcp() {
    for bin in SERVERS {
        let s = Server::start(bin, &["--static-auth-secret", SECRET, "--allow-loopback-peers"]);
        let (_peer, pp) = peer();
        let r = uclient(s.port, pp, &["-W", SECRET, "-u", "carol"]);
        assert_all_relayed(&s, &r, &format!("{bin} rest udp"));
        let r = uclient(s.port, pp, &["-t", "-W", SECRET, "-u", "carol"]);
        assert_all_relayed(&s, &r, &format!("{bin} rest tcp"));
        // The wrong secret gets nowhere.
        let r = uclient(s.port, pp, &["-W", "not-the-secret", "-u", "carol"]);
        assert_ne!(r.status.map(|s| s.success()), Some(true), "{bin}: wrong secret accepted\n{}", r.output);
        assert!(uclient_totals(&r.output).is_none_or(|t| t.received == 0), "{bin}: {}", r.output);
    }
}

#[test]
fn loopback_peer_is_refused_by_default() {
    for bin in SERVERS {
        let user = format!("{USER}:{PASS}");
        let s = Server::start(bin, &["--user", &user]);
        let (_peer, pp) = peer();
        for extra in [&["-u", USER, "-w", PASS][..], &["-t", "-u", USER, "-w", PASS][..]] {
            let r = uclient(s.port, pp, extra);
            assert_ne!(r.status.map(|s| s.success()), Some(true), "{bin} {extra:?}: relayed to loopback without --allow-loopback-peers\n{}", r.output);
            assert!(r.output.contains("403"), "{bin} {extra:?}: expected 403 Forbidden\n{}", r.output);
        }
    }
}

#[test]
fn config_file_keys_match_the_flags() {
    for bin in SERVERS {
        let dir = switchboard_tests::scratch("config");
        let path = dir.join("switchboard.toml");
        std::fs::write(&path, format!("user = [\"{USER}:{PASS}\"]\nallow-loopback-peers = true\nrealm = \"file.realm\"\nmin-port = 40000\nmax-port = 40999\n")).unwrap();
        let s = Server::start(bin, &["--config", path.to_str().unwrap()]);
        assert!(s.proc.stdout().contains("file.realm") && s.proc.stdout().contains("40000-40999"), "{}", s.proc.stdout());
        let (_peer, pp) = peer();
        let r = uclient(s.port, pp, &["-u", USER, "-w", PASS]);
        assert_all_relayed(&s, &r, &format!("{bin} config file"));
    }
}

#[test]
fn a_real_coturn_config_is_read() {
    // Debian's own /etc/turnserver.conf (package coturn), with the keys a coturn user sets added, as they would be.
    let base = std::fs::read_to_string("/etc/turnserver.conf").expect("coturn's turnserver.conf (Debian package coturn)");
    for bin in SERVERS {
        let (port, http) = (switchboard_tests::free_port(), switchboard_tests::free_port());
        let dir = switchboard_tests::scratch("coturn-conf");
        let conf = format!(
            "{base}\nlistening-port={port}\nlistening-ip=127.0.0.1\nrealm=coturn.example\nlt-cred-mech\nuser={USER}:{PASS}\n\
             allow-loopback-peers\nmin-port=41000\nmax-port=41999\nrelay-threads=2\ndenied-peer-ip=10.0.0.0-10.255.255.255\n\
             no-cli\ncli-password=qwerty\n"
        );
        let path = dir.join("turnserver.conf");
        std::fs::write(&path, conf).unwrap();
        let args = ["serve", "--config", path.to_str().unwrap(), "--http-listen", &format!("127.0.0.1:{http}"), "--media-listen", "127.0.0.1:0"];
        let mut proc = switchboard_tests::Proc::spawn(&switchboard_tests::bin(bin), &args.map(String::from), &dir, "server");
        proc.wait_for("is serving", Duration::from_secs(10));
        let s = Server { proc, port, http_port: http, dir };
        let banner = s.proc.stdout();
        assert!(banner.contains("coturn.example") && banner.contains("41000-41999") && banner.contains("workers    2"), "{bin}: {banner}");
        let (_peer, pp) = peer();
        let r = uclient(s.port, pp, &["-u", USER, "-w", PASS]);
        assert_all_relayed(&s, &r, &format!("{bin} with a coturn config"));
        let log = s.proc.stderr();
        assert!(log.contains("coturn keys ignored") && log.contains("syslog") && log.contains("cli-password"), "{bin}: {log}");
        assert!(!log.contains("qwerty"), "{bin}: a value of an ignored key reached the log");
    }
}

#[test]
fn graceful_stop_releases_allocations_and_secrets_stay_out_of_logs() {
    for bin in SERVERS {
        let user = format!("{USER}:{PASS}");
        let mut s = Server::start(bin, &["--user", &user, "--static-auth-secret", SECRET, "--allow-loopback-peers", "--log-level", "trace"]);
        let (_peer, pp) = peer();
        let r = uclient(s.port, pp, &["-u", USER, "-w", PASS]);
        assert_all_relayed(&s, &r, bin);
        s.proc.signal("TERM");
        let st = s.proc.wait(Duration::from_secs(10)).unwrap_or_else(|| panic!("{bin} did not stop on SIGTERM"));
        assert!(st.success(), "{bin}: exit {st}\n{}", s.proc.stderr());
        let log = format!("{}{}", s.proc.stdout(), s.proc.stderr());
        assert!(log.contains("stopped"), "{bin}: {log}");
        assert!(!log.contains(PASS) && !log.contains(SECRET), "{bin}: a secret reached the log");
        // SIGINT stops it too.
        let mut s = Server::start(bin, &[]);
        s.proc.signal("INT");
        assert!(s.proc.wait(Duration::from_secs(10)).is_some_and(|st| st.success()), "{bin} did not stop on SIGINT");
    }
}

#[test]
fn logs_are_plain_text_in_a_file_and_json_on_request() {
    for bin in SERVERS {
        // The test's servers write their stderr to a file: no colour escapes there.
        let mut s = static_user_server(bin);
        s.proc.signal("TERM");
        assert!(s.proc.wait(Duration::from_secs(10)).is_some_and(|st| st.success()), "{bin}");
        let log = s.proc.stderr();
        assert!(log.contains("serving") && log.contains("stopped"), "{bin}: {log}");
        assert!(!log.contains('\u{1b}'), "{bin}: colour escapes in a log file:\n{log}");
        let mut s = Server::start(bin, &["--log-format", "json"]);
        s.proc.signal("TERM");
        assert!(s.proc.wait(Duration::from_secs(10)).is_some_and(|st| st.success()), "{bin}");
        let log = s.proc.stderr();
        let lines: Vec<serde_json::Value> = log
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{bin}: not JSON ({e}): {l}")))
            .collect();
        assert!(lines.iter().all(|v| v["level"].is_string() && v["timestamp"].is_string()), "{bin}: {log}");
        let stopped = lines.iter().find(|v| v["fields"]["message"] == "stopped").unwrap_or_else(|| panic!("{bin}: {log}"));
        assert!(stopped["fields"]["workers"].as_u64().is_some(), "{bin}: fields are JSON values: {stopped}");
    }
}

/// Sends `req` from a fresh socket to `port` on loopback and returns the answer (retrying while the server starts).
fn answer_to(port: u16, req: &[u8]) -> Vec<u8> {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut buf = [0u8; 1500];
    for _ in 0..50 {
        s.send_to(req, ("127.0.0.1", port)).unwrap();
        if let Ok((n, _)) = s.recv_from(&mut buf) {
            return buf[..n].to_vec();
        }
    }
    panic!("no answer from port {port}");
}

#[test]
fn unauthenticated_answers_are_no_larger_than_coturns() {
    require("turnserver");
    // coturn 4.6 beside us, same realm and user, on loopback.
    let port = switchboard_tests::free_port();
    let dir = switchboard_tests::scratch("coturn");
    let args = format!(
        "-n --listening-ip 127.0.0.1 --listening-port {port} --relay-ip 127.0.0.1 --min-port 45000 --max-port 45999 \
         --lt-cred-mech --user {USER}:{PASS} --realm switchboard --no-tls --no-dtls --no-cli --log-file stdout"
    );
    let args: Vec<String> = args.split_whitespace().map(String::from).collect();
    let _coturn = switchboard_tests::Proc::spawn(std::path::Path::new("turnserver"), &args, &dir, "coturn");
    let mut tid = [0u8; 20];
    tid[4..8].copy_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
    tid[8..].copy_from_slice(b"sizesizesize");
    // Binding (20 bytes), and Allocate with REQUESTED-TRANSPORT only (28 bytes): both unauthenticated.
    let mut binding = tid.to_vec();
    binding[..2].copy_from_slice(&[0, 1]);
    let mut allocate = tid.to_vec();
    allocate[..4].copy_from_slice(&[0, 3, 0, 8]);
    allocate.extend_from_slice(&[0, 0x19, 0, 4, 17, 0, 0, 0]);
    let theirs: Vec<usize> = [&binding, &allocate].iter().map(|r| answer_to(port, r).len()).collect();
    for bin in SERVERS {
        let s = static_user_server(bin);
        let ours: Vec<usize> = [&binding, &allocate].iter().map(|r| answer_to(s.port, r).len()).collect();
        println!("{bin}: Binding 20 -> {} bytes (coturn {}), Allocate 28 -> {} (coturn {})", ours[0], theirs[0], ours[1], theirs[1]);
        assert!(ours[0] <= theirs[0], "{bin}: Binding answered with {} bytes, coturn {}", ours[0], theirs[0]);
        assert!(ours[1] <= theirs[1], "{bin}: Allocate answered with {} bytes, coturn {}", ours[1], theirs[1]);
    }
}

#[test]
fn idle_server_does_not_spin() {
    for bin in SERVERS {
        let s = static_user_server(bin);
        // An allocation makes timers pending, which a busy loop would spin on.
        let (_peer, pp) = peer();
        let r = uclient(s.port, pp, &["-u", USER, "-w", PASS]);
        assert_all_relayed(&s, &r, bin);
        let before = s.proc.cpu_ticks();
        std::thread::sleep(Duration::from_secs(2));
        let used = s.proc.cpu_ticks() - before;
        // 2 s of wall time is 200 ticks; a busy loop would use nearly all of them.
        assert!(used <= 5, "{bin} used {used} CPU ticks in 2 s while idle");
    }
}

#[test]
fn parses_uclient_summary() {
    let out = "7: : start_mclient: msz=4, tot_send_msgs=369, tot_recv_msgs=369\n7: : start_mclient: tot_send_msgs=400, tot_recv_msgs=399\n7: : Total lost packets 1 (0.25%), total send dropped 0 (0.000000%)\n";
    assert_eq!(switchboard_tests::uclient_totals(out), Some(switchboard_tests::UclientTotals { sent: 400, received: 399, lost: 1 }));
}

/// RFC 5780 with coturn's own discovery client: with `--alt-ip`, `turnutils_natdiscovery -m -f` gets answers from
/// the other IP and port it asks for (RESPONSE-ORIGIN, OTHER-ADDRESS) and, on loopback where there is no NAT,
/// concludes endpoint-independent mapping and filtering. Without a second address CHANGE-REQUEST gets 420 and the
/// client cannot conclude anything.
#[test]
fn natdiscovery_finds_the_other_address_and_no_nat_on_loopback() {
    require("turnutils_natdiscovery");
    for bin in SERVERS {
        let s = Server::start(bin, &["--alt-ip", "127.0.0.2"]);
        let args = ["-m".into(), "-f".into(), "-p".into(), s.port.to_string(), "127.0.0.1".into()];
        let r = run("turnutils_natdiscovery", &args, Duration::from_secs(30));
        let out = &r.output;
        assert!(out.contains("NAT with Endpoint Independent Mapping!") && out.contains("NAT with Endpoint Independent Filtering!"), "{bin}: {out}");
        // Answers came from all four addresses.
        for origin in [format!("127.0.0.1:{}", s.port), format!("127.0.0.2:{}", s.port), format!("127.0.0.2:{}", s.port + 1)] {
            assert!(out.contains(&format!("Response origin: : {origin}")), "{bin}: no answer from {origin}: {out}");
        }
        assert!(out.contains(&format!("Other addr: : 127.0.0.2:{}", s.port + 1)), "{bin}: {out}");
        let st = s.stats();
        assert!(st["turn"]["stun"]["discovery_requests"].as_u64().unwrap_or(0) >= 4, "{bin}: {}", st["turn"]["stun"]);
        // Without --alt-ip: no RFC 5780 answers.
        let plain = Server::start(bin, &[]);
        let args = ["-m".into(), "-f".into(), "-p".into(), plain.port.to_string(), "127.0.0.1".into()];
        let r = run("turnutils_natdiscovery", &args, Duration::from_secs(30));
        assert!(!r.output.contains("Endpoint Independent Filtering!") && !r.output.contains("Response origin"), "{bin}: {}", r.output);
    }
}

/// IPv6 end to end: coturn's client on `::1` asks for an IPv6 relay (`-x`) and every message comes back through
/// it from an echo peer on `::1`.
#[test]
fn uclient_ipv6_relay_on_ipv6_loopback() {
    require("turnutils_uclient");
    for bin in SERVERS {
        let user = format!("{USER}:{PASS}");
        let s = Server::start_on(bin, "::1", &["--user", &user, "--relay-ip", "::1", "--allow-loopback-peers"]);
        let (_peer, pp) = switchboard_tests::peer_on("::1");
        let (p, sp) = (pp.to_string(), s.port.to_string());
        let args: Vec<String> =
            ["-x", "-u", USER, "-w", PASS, "-e", "::1", "-r", &p, "-n", "100", "-m", "4", "-l", "160", "-p", &sp, "::1"].map(String::from).to_vec();
        let r = run("turnutils_uclient", &args, Duration::from_secs(60));
        // The echo peer listens on ::1 only, and a permission's family must be the relay's (else 443): every
        // message back means an IPv6 relay.
        assert_all_relayed(&s, &r, &format!("{bin} ipv6"));
    }
}

/// The peer policy on an IPv6 allocation, from outside: a client on `::1` allocates an IPv6 relay and asks for a
/// permission to every address form of the policy's list. Each IPv6 one is refused with 403, each IPv4 one is a
/// family mismatch (443), and a public IPv6 address is granted (a permission sends nothing to the peer).
#[test]
fn ipv6_allocation_refuses_every_special_ipv6_form_end_to_end() {
    use std::net::{IpAddr, SocketAddr, UdpSocket};
    use switchboard_core::stun::message::{append_attribute, append_fingerprint, append_integrity};
    use switchboard_core::stun::view::{attr, encode_xor_address, method, Class, StunView, MAGIC_COOKIE};
    use switchboard_core::turn::auth::long_term_key;
    use switchboard_core::turn::policy::BYPASS_FORMS;

    for bin in SERVERS {
        let user = format!("{USER}:{PASS}");
        let s = Server::start_on(bin, "::1", &["--user", &user, "--relay-ip", "::1"]);
        let server = SocketAddr::new(IpAddr::from(std::net::Ipv6Addr::LOCALHOST), s.port);
        let sock = UdpSocket::bind("[::1]:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        let mut n = 0u32;
        let mut next_tid = || {
            n += 1;
            let mut t = [6u8; 12];
            t[..4].copy_from_slice(&n.to_be_bytes());
            t
        };
        let request = |m: u16, tid: &[u8; 12], attrs: &[(u16, Vec<u8>)], auth: Option<&(String, String)>| {
            let mut b = m.to_be_bytes().to_vec();
            b.extend_from_slice(&[0, 0]);
            b.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
            b.extend_from_slice(tid);
            for (t, v) in attrs {
                append_attribute(&mut b, *t, v);
            }
            if let Some((realm, nonce)) = auth {
                append_attribute(&mut b, attr::USERNAME, USER.as_bytes());
                append_attribute(&mut b, attr::REALM, realm.as_bytes());
                append_attribute(&mut b, attr::NONCE, nonce.as_bytes());
                append_integrity(&mut b, &long_term_key(USER, realm, PASS));
            }
            append_fingerprint(&mut b);
            b
        };
        let exchange = |req: &[u8]| -> Vec<u8> {
            let mut buf = [0u8; 2048];
            for _ in 0..20 {
                sock.send_to(req, server).unwrap();
                while let Ok((n, _)) = sock.recv_from(&mut buf) {
                    if n >= 20 && buf[8..20] == req[8..20] {
                        return buf[..n].to_vec();
                    }
                }
            }
            panic!("{bin}: no answer");
        };
        let code = |r: &[u8]| {
            let v = StunView::new_checked(r).unwrap();
            (v.class() != Class::Success).then(|| v.find(attr::ERROR_CODE).map_or(0, |e| u16::from(e[2]) * 100 + u16::from(e[3])))
        };
        let alloc_attrs = [(attr::REQUESTED_TRANSPORT, vec![17, 0, 0, 0]), (attr::REQUESTED_ADDRESS_FAMILY, vec![2, 0, 0, 0])];
        let r = exchange(&request(method::ALLOCATE, &next_tid(), &alloc_attrs, None));
        assert_eq!(code(&r), Some(401), "{bin}");
        let v = StunView::new_checked(&r).unwrap();
        let text = |t| String::from_utf8(v.find(t).unwrap().to_vec()).unwrap();
        let auth = (text(attr::REALM), text(attr::NONCE));
        let tid = next_tid();
        let r = exchange(&request(method::ALLOCATE, &tid, &alloc_attrs, Some(&auth)));
        assert_eq!(code(&r), None, "{bin}: the IPv6 allocation");
        let relayed = StunView::new_checked(&r).unwrap().xor_address(attr::XOR_RELAYED_ADDRESS).unwrap();
        assert!(relayed.is_ipv6(), "{bin}: {relayed}");
        let mut permit = |ip: IpAddr| {
            let tid = next_tid();
            let mut x = [0u8; 20];
            let n = encode_xor_address(SocketAddr::new(ip, 9), &tid, &mut x);
            code(&exchange(&request(method::CREATE_PERMISSION, &tid, &[(attr::XOR_PEER_ADDRESS, x[..n].to_vec())], Some(&auth))))
        };
        let (mut v6, mut v4) = (0, 0);
        for form in BYPASS_FORMS {
            let ip: IpAddr = form.parse().unwrap();
            let want = if ip.is_ipv6() { 403 } else { 443 };
            assert_eq!(permit(ip), Some(want), "{bin}: {form}");
            if ip.is_ipv6() { v6 += 1 } else { v4 += 1 }
        }
        assert_eq!(permit("2606:4700::1111".parse().unwrap()), None, "{bin}: a public IPv6 peer");
        println!("{bin}: {v6} IPv6 forms refused (403), {v4} IPv4 forms a family mismatch (443), a public one granted");
    }
}

/// ADDITIONAL-ADDRESS-FAMILY with coturn's client: `turnutils_uclient -Z` asks for a dual allocation (with the
/// draft's attribute code 0x8032, and EVEN-PORT) over IPv4 and relays to an echo peer on `::1` through the
/// allocation's IPv6 relay, and to one on 127.0.0.1 through its IPv4 relay. Without the dual allocation the IPv6
/// peer would be a family mismatch (443) and nothing would come back.
#[test]
fn uclient_dual_allocation_relays_to_ipv4_and_ipv6_peers() {
    require("turnutils_uclient");
    for bin in SERVERS {
        let user = format!("{USER}:{PASS}");
        let s = Server::start(bin, &["--user", &user, "--relay-ip", "127.0.0.1", "--relay-ip", "::1", "--allow-loopback-peers"]);
        for peer_ip in ["::1", "127.0.0.1"] {
            let (_peer, pp) = switchboard_tests::peer_on(peer_ip);
            let (p, sp) = (pp.to_string(), s.port.to_string());
            let args: Vec<String> =
                ["-Z", "-u", USER, "-w", PASS, "-e", peer_ip, "-r", &p, "-n", "100", "-m", "4", "-l", "160", "-p", &sp, "127.0.0.1"].map(String::from).to_vec();
            let r = run("turnutils_uclient", &args, Duration::from_secs(60));
            assert_all_relayed(&s, &r, &format!("{bin} dual allocation, peer {peer_ip}"));
        }
    }
}

/// RFC 6062 TCP relays with coturn's client: `turnutils_uclient -T` (6 clients, each allocating a TCP relay and
/// connecting to the other clients' relays: Connect on one side, ConnectionAttempt on the other, ConnectionBind on
/// both; 30 connections) relays 300 of 300 messages over TCP, and again with `-S`, every connection in TLS. With four workers most
/// data connections land on another worker than their allocation's and are handed over (with their TLS session):
/// `/stats` counts the hand-overs, and every relayed byte both ways. When the clients leave, no connection stays.
#[test]
fn uclient_tcp_relays_over_tcp_and_tls_with_four_workers() {
    require("turnutils_uclient");
    require("openssl");
    for bin in SERVERS {
        let dir = switchboard_tests::scratch("tcp-relay");
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        let ok = std::process::Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=localhost"])
            .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("openssl runs");
        assert!(ok.status.success(), "openssl: {}", String::from_utf8_lossy(&ok.stderr));
        let (tls_port, https_port) = (switchboard_tests::free_port(), switchboard_tests::free_port());
        let user = format!("{USER}:{PASS}");
        let (tls, https) = (format!("127.0.0.1:{tls_port}"), format!("127.0.0.1:{https_port}"));
        let (c, k) = (cert.display().to_string(), key.display().to_string());
        // On loopback every connection (control, data, to peers and from them) comes from 127.0.0.1: the
        // default cap of 100 per address is too low for a run of -m 10 by hand.
        let s = Server::start(
            bin,
            &[
                "--workers", "4", "--max-connections-per-ip", "1000", "--user", &user, "--allow-loopback-peers", "--cert", &c, "--pkey", &k,
                "--tls-listen", &tls, "--https-listen", &https,
            ],
        );
        let mut handoffs = 0;
        for (what, port, extra) in [("tcp", s.port, &[][..]), ("tls", tls_port, &["-S"][..])] {
            let p = port.to_string();
            let mut args: Vec<String> = vec!["-T".into()];
            args.extend(extra.iter().map(|a| a.to_string()));
            args.extend(["-u", USER, "-w", PASS, "-n", "50", "-m", "6", "-l", "160", "-p", &p, "127.0.0.1"].map(String::from));
            let before = s.stats();
            // uclient waits up to 40 s for its connections before it sends (then says "not enough").
            let r = run("turnutils_uclient", &args, Duration::from_secs(120));
            let diagnose = |s: &Server| format!("server /stats turn: {}, stream_handoffs {}\nstderr:\n{}", s.stats()["turn"], s.stats()["stream_handoffs"], s.proc.stderr());
            assert_eq!(r.status.map(|s| s.success()), Some(true), "{bin} {what}: uclient failed\n{}\n{}", r.output, diagnose(&s));
            assert!(r.output.contains("30 connections are completed"), "{bin} {what}: not every connection completed\n{}\n{}", r.output, diagnose(&s));
            let t = uclient_totals(&r.output).unwrap_or_else(|| panic!("{bin} {what}: no totals in\n{}", r.output));
            assert_eq!((t.sent, t.received, t.lost), (300, 300, 0), "{bin} {what}\n{}", r.output);
            // Every connection closes when the clients leave.
            let mut after = s.stats();
            for _ in 0..20 {
                if after["turn"]["tcp_connections"] == 0 {
                    break;
                }
                after = s.stats();
            }
            assert_eq!(after["turn"]["tcp_connections"], 0, "{bin} {what}: {}", after["turn"]);
            let delta = |k: &str| after["turn"][k].as_u64().unwrap() - before["turn"][k].as_u64().unwrap();
            assert_eq!((delta("to_peer_bytes"), delta("to_client_bytes")), (300 * 160, 300 * 160), "{bin} {what}: every byte, both ways");
            assert_eq!(delta("tcp_connect_failures"), 0, "{bin} {what}");
            handoffs = after["stream_handoffs"].as_u64().unwrap();
            println!("{bin} {what}: 300/300 relayed over TCP relays; {handoffs} data connections handed to their allocation's worker so far");
        }
        assert!(handoffs > 0, "{bin}: with four workers some data connection lands on another worker");
    }
}
