//! Real NATs: network namespaces with iptables NAT between clients and the server (issue 14).
//!
//! Each test builds its own small internet out of network namespaces (names `sbnat-<pid>-<test>-*`, deleted when
//! the test ends, also on a panic) and sends traffic only inside it:
//!
//! ```text
//!   c1 10.0.1.2 ── lan 10.0.1.1 [r1: NAT] wan 198.51.100.11 ─┐
//!   c2 10.0.2.2 ── lan 10.0.2.1 [r2: NAT] wan 198.51.100.12 ─┤ bridge br0
//!   ...                                                       ├── (namespace "pub", the "public internet")
//!   srv 198.51.100.1 and 198.51.100.2 (Switchboard) ─────────┘
//! ```
//!
//! Each router namespace does what a home router does: it forwards its client's traffic and translates it with
//! `iptables -t nat -A POSTROUTING -o wan -j MASQUERADE` (Linux keeps the client's port for every destination when
//! it can: endpoint-independent mapping) or with `MASQUERADE --random-fully` (a fresh random port for every
//! destination: address-and-port-dependent mapping, a symmetric NAT), and its firewall drops unsolicited packets
//! addressed to the router itself (`INPUT -i wan -m conntrack --ctstate NEW -j DROP`, as OpenWrt's default wan zone
//! does). That firewall rule matters, see [`NAT_FIREWALL`].
//!
//! - [`natdiscovery_and_probe_see_the_nat_each_namespace_has`] (test A): coturn's `turnutils_natdiscovery -m -f`
//!   and `switchboard probe --json`, run inside a client namespace against the server's two addresses (RFC 5780,
//!   `--alt-ip`), report the same mapping and filtering, and the ones these NATs have: MASQUERADE is
//!   endpoint-independent mapping, `--random-fully` address-and-port-dependent; both filter
//!   address-and-port-dependently (Linux conntrack lets in only replies from the exact address and port a client
//!   sent to). Against both binaries.
//! - [`chromium_calls_connect_directly_or_through_the_relay_as_the_nat_table_says`] (test B): two Chromium pages,
//!   each in its own client namespace behind its own NAT, make a mesh (p2p) call through the web client of the
//!   server, with TURN offered; the selected candidate pair is direct (no relay on either end) between two
//!   MASQUERADE NATs (port-restricted cone to port-restricted cone), and goes through Switchboard's relay between
//!   two `--random-fully` NATs (symmetric to symmetric) and between MASQUERADE and `--random-fully`
//!   (port-restricted cone to symmetric), which is what `switchboard probe`'s table says for the NATs test A
//!   measured. Against the `switchboard` binary only, to keep the suite's time down (a browser call per case; the
//!   server's TURN and signaling are the same core code in both binaries, and test A covers both).
//!
//! They run inside the README's test command (`./scripts/test.sh` runs the suite as root inside `unshare --net`;
//! `ip netns add` works there too), and alone on a host as root with
//! `cargo test -p switchboard-tests --test nat_namespaces`, touching only the namespaces they made: every link and
//! address is created inside those namespaces (`ip -n NS ...`), nothing in the namespace the test runs in.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use switchboard_tests::{bin, require, run, scratch, Proc, Run, SERVERS};

/// The server's two public addresses (RFC 5780 needs two) and its ports inside its own namespace.
const SERVER_IP: &str = "198.51.100.1";
const SERVER_ALT_IP: &str = "198.51.100.2";
const TURN_PORT: u16 = 3478;
const HTTP_PORT: u16 = 8080;

/// The firewall rule every router namespace has besides its NAT: unsolicited packets to the router itself are
/// dropped, as a home router's firewall does.
///
/// Without it, two Linux MASQUERADE NATs usually do not connect directly, although both map endpoint-independently
/// (measured here without the rule: three calls of four ended on a relayed pair, one local end a prflx candidate
/// whose port was not the srflx one; the fourth connected directly when the first checks crossed in flight). The first ICE check from A reaches B's router before B
/// has sent anything to A; conntrack records it as a new connection to the router itself (A's public address and
/// port -> B's router, answered with ICMP port unreachable) and keeps that entry for 30 s, refreshed by every
/// retransmitted check. When B then sends to A's public address from its usual public port, the translated packet
/// would be the reply of that entry, so MASQUERADE picks another source port for it: for that one destination the
/// NAT no longer keeps the port, A's router sees a port A never sent to and drops it, and each side's checks keep
/// the other's clash alive. A packet dropped in the filter table is never confirmed into conntrack, so with this
/// rule the unsolicited check leaves no entry, B's reply keeps its port, and hole punching works as RFC 4787
/// predicts for endpoint-independent mapping.
const NAT_FIREWALL: &[&str] = &["-A", "INPUT", "-i", "wan", "-m", "conntrack", "--ctstate", "NEW", "-j", "DROP"];

/// How a router namespace translates its client's traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Nat {
    /// `MASQUERADE`: Linux keeps the client's source port for every destination when the resulting connection is
    /// unique: endpoint-independent mapping (a port-restricted cone with conntrack's filtering).
    Masquerade,
    /// `MASQUERADE --random-fully`: a random source port for every new connection, so for every destination:
    /// address-and-port-dependent mapping (a symmetric NAT).
    RandomFully,
}

/// A client behind its own NAT router.
struct Client {
    /// The client's namespace.
    ns: String,
    /// Its private address.
    lan_ip: String,
    /// Its router's public address.
    public_ip: String,
    nat: Nat,
}

/// Namespaces this test made, deleted (by name) when dropped, also on a panic.
struct Topology {
    prefix: String,
    made: Vec<String>,
    clients: Vec<Client>,
}

/// Runs `ip ARGS`, failing the test with its output if it fails.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap_or_else(|e| panic!("cannot run ip: {e}"));
    assert!(out.status.success(), "ip {}: {}{}", args.join(" "), String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

/// Runs `PROGRAM ARGS` in namespace `ns` (`ip netns exec`), failing the test if it fails.
fn exec(ns: &str, program: &str, args: &[&str]) {
    ip(&[&["netns", "exec", ns, program][..], args].concat());
}

impl Topology {
    /// The server's namespace, the public bridge, and one NAT router and client for each of `nats`.
    fn build(test: &str, nats: &[Nat]) -> Topology {
        require("ip");
        require("iptables");
        let mut t = Topology { prefix: format!("sbnat-{}-{test}", std::process::id()), made: Vec::new(), clients: Vec::new() };
        let pubns = t.add("pub");
        ip(&["-n", &pubns, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &pubns, "link", "set", "br0", "up"]);
        // The server: two addresses on one link.
        let srv = t.add("srv");
        t.wire(&srv, "eth0", &pubns, "srv");
        ip(&["-n", &pubns, "link", "set", "srv", "master", "br0"]);
        for a in [SERVER_IP, SERVER_ALT_IP] {
            ip(&["-n", &srv, "addr", "add", &format!("{a}/24"), "dev", "eth0"]);
        }
        for (i, &nat) in nats.iter().enumerate() {
            let n = i + 1;
            let (router, client) = (t.add(&format!("r{n}")), t.add(&format!("c{n}")));
            let (public_ip, lan_ip, gateway) = (format!("198.51.100.{}", 10 + n), format!("10.0.{n}.2"), format!("10.0.{n}.1"));
            let port = format!("r{n}");
            t.wire(&router, "wan", &pubns, &port);
            ip(&["-n", &pubns, "link", "set", &port, "master", "br0"]);
            ip(&["-n", &router, "addr", "add", &format!("{public_ip}/24"), "dev", "wan"]);
            t.wire(&router, "lan", &client, "eth0");
            ip(&["-n", &router, "addr", "add", &format!("{gateway}/24"), "dev", "lan"]);
            ip(&["-n", &client, "addr", "add", &format!("{lan_ip}/24"), "dev", "eth0"]);
            ip(&["-n", &client, "route", "add", "default", "via", &gateway]);
            // /proc/sys/net is the namespace's own.
            exec(&router, "sh", &["-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"]);
            let mut masquerade = vec!["-t", "nat", "-A", "POSTROUTING", "-o", "wan", "-j", "MASQUERADE"];
            if nat == Nat::RandomFully {
                masquerade.push("--random-fully");
            }
            exec(&router, "iptables", &masquerade);
            exec(&router, "iptables", NAT_FIREWALL);
            t.clients.push(Client { ns: client, lan_ip, public_ip, nat });
        }
        t
    }

    /// Makes namespace `<prefix>-<name>` with its loopback up, remembered for deletion before anything else.
    fn add(&mut self, name: &str) -> String {
        let ns = format!("{}-{name}", self.prefix);
        ip(&["netns", "add", &ns]);
        self.made.push(ns.clone());
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        ns
    }

    /// A veth pair made inside namespace `a` (`a_if`) with its other end moved straight into `b` (`b_if`), both up:
    /// nothing is created in the namespace the test runs in.
    fn wire(&self, a: &str, a_if: &str, b: &str, b_if: &str) {
        ip(&["-n", a, "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", b]);
        ip(&["-n", a, "link", "set", a_if, "up"]);
        ip(&["-n", b, "link", "set", b_if, "up"]);
    }

    fn ns(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    /// Starts server binary `name` in the server namespace, on both public addresses (`--alt-ip`), relaying from
    /// 198.51.100.1 to peers in 198.51.100.0/24 (a documentation range its peer policy refuses by default).
    fn server(&self, name: &str, extra: &[&str]) -> Proc {
        let dir = scratch(&format!("nat-{name}"));
        let exe = bin(name).display().to_string();
        let (turn, http, media) = (format!("{SERVER_IP}:{TURN_PORT}"), format!("{SERVER_IP}:{HTTP_PORT}"), format!("{SERVER_IP}:0"));
        let srv = self.ns("srv");
        let mut args: Vec<String> = ["netns", "exec", srv.as_str(), exe.as_str(), "serve", "--turn-listen", turn.as_str(), "--http-listen", http.as_str()]
            .map(String::from)
            .to_vec();
        args.extend(["--media-listen".to_string(), media]);
        args.extend(["--relay-ip", SERVER_IP, "--allowed-peer-ip", "198.51.100.0/24"].map(String::from));
        args.extend(extra.iter().map(|s| s.to_string()));
        // `ip netns exec` execs the server: this pid is the server's.
        let mut p = Proc::spawn(Path::new("ip"), &args, &dir, "server");
        p.wait_for("is serving", Duration::from_secs(10));
        p
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        // Processes in them were stopped first (they are declared after the topology). Deleting a namespace's name
        // deletes its links: the veth pairs go with it, and the bridge with "pub".
        for ns in self.made.drain(..).rev() {
            let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        }
    }
}

/// `PROGRAM ARGS` run to completion inside namespace `ns`, killed after `limit`.
fn run_in(ns: &str, program: &str, args: &[&str], limit: Duration) -> Run {
    let all: Vec<String> = [&["netns", "exec", ns, program][..], args].concat().iter().map(|s| s.to_string()).collect();
    run("ip", &all, limit)
}

/// What turnutils_natdiscovery concluded about `what` ("Mapping" or "Filtering"), in the probe's words:
/// "NAT with Address and Port Dependent Mapping!" -> "address-and-port-dependent".
fn natdiscovery_says(output: &str, what: &str) -> Option<String> {
    let line = output.lines().find(|l| l.starts_with("NAT with ") && l.ends_with(&format!(" {what}!")))?;
    let words = &line["NAT with ".len()..line.len() - what.len() - 2];
    Some(words.to_lowercase().replace(' ', "-"))
}

/// The reflexive (mapped) addresses turnutils_natdiscovery printed, in order, as (ip, port).
fn natdiscovery_reflexive(output: &str) -> Vec<(String, u16)> {
    output
        .lines()
        .filter_map(|l| l.split_once("UDP reflexive addr: ").map(|(_, a)| a.trim()))
        .filter_map(|a| a.rsplit_once(':').and_then(|(ip, port)| Some((ip.to_string(), port.parse().ok()?))))
        .collect()
}

fn json(r: &Run) -> Value {
    let start = r.output.find('{').unwrap_or_else(|| panic!("no JSON in\n{}", r.output));
    serde_json::from_str(&r.output[start..]).unwrap_or_else(|e| panic!("{e}: {}", r.output))
}

/// Test A: for both NAT kinds and both binaries, coturn's RFC 5780 client and `switchboard probe` report the same
/// mapping and filtering from behind the NAT, and it is the behaviour the NAT has.
///
/// Filtering, measured: both NAT kinds filter address-and-port-dependently. natdiscovery's filtering test asks the
/// server to answer from the other address and port (no answer) and then from the other port only (no answer
/// either): Linux conntrack passes an inbound UDP packet to the client only when it is the reply of a connection
/// the client opened, i.e. it comes from exactly the address and port the client sent to. Anything else is a new
/// connection to the router itself, which has no listener (and which the firewall rule drops). So MASQUERADE is a
/// port-restricted cone NAT, not a full or restricted cone, and `--random-fully` a symmetric NAT.
#[test]
fn natdiscovery_and_probe_see_the_nat_each_namespace_has() {
    require("turnutils_natdiscovery");
    let topo = Topology::build("a", &[Nat::Masquerade, Nat::RandomFully]);
    for name in SERVERS {
        let server = topo.server(name, &["--alt-ip", SERVER_ALT_IP, "--user", "u:p"]);
        let target = format!("{SERVER_IP}:{TURN_PORT}");
        let port = TURN_PORT.to_string();
        // Both clients at once: they are behind different routers, and the filtering tests spend most of their time
        // waiting for answers that do not come.
        let results: Vec<(Run, Run)> = std::thread::scope(|s| {
            let jobs: Vec<_> = topo
                .clients
                .iter()
                .map(|c| {
                    let (target, port) = (&target, &port);
                    s.spawn(move || {
                        let nd = run_in(&c.ns, "turnutils_natdiscovery", &["-m", "-f", "-p", port, SERVER_IP], Duration::from_secs(40));
                        let exe = bin(name).display().to_string();
                        // A second per unanswered request is plenty on veth links; the TURN checks run too.
                        let pr = run_in(&c.ns, &exe, &["probe", target, "--user", "u:p", "--timeout", "1", "--json"], Duration::from_secs(40));
                        (nd, pr)
                    })
                })
                .collect();
            jobs.into_iter().map(|j| j.join().expect("a client thread")).collect()
        });
        for (c, (nd, pr)) in topo.clients.iter().zip(&results) {
            let what = format!("{name}, {:?} client", c.nat);
            println!("{what}: turnutils_natdiscovery -m -f:\n{}", nd.output);
            println!("{what}: switchboard probe --json:\n{}", pr.output);
            let (mapping, filtering) = (natdiscovery_says(&nd.output, "Mapping"), natdiscovery_says(&nd.output, "Filtering"));
            let expected_mapping = match c.nat {
                Nat::Masquerade => "endpoint-independent",
                Nat::RandomFully => "address-and-port-dependent",
            };
            assert_eq!(
                (mapping.as_deref(), filtering.as_deref()),
                (Some(expected_mapping), Some("address-and-port-dependent")),
                "{what}: turnutils_natdiscovery:\n{}\nserver:\n{}",
                nd.output,
                server.stderr()
            );
            // natdiscovery's mapping test: the server saw the router's address; MASQUERADE kept one port (the
            // client's own, as the probe shows below), --random-fully took a new one for each server address.
            // (Its mapping test stops after two answers when the port stayed the same, else asks a third time.)
            let mapping_part = nd.output.split("Filtering Behavior Discovery").next().unwrap_or("");
            let mapped = natdiscovery_reflexive(mapping_part);
            assert!(mapped.len() >= 2 && mapped.iter().all(|(ip, _)| *ip == c.public_ip), "{what}: reflexive addresses {mapped:?}");
            let ports: std::collections::BTreeSet<u16> = mapped.iter().map(|(_, p)| *p).collect();
            match c.nat {
                Nat::Masquerade => assert_eq!(ports.len(), 1, "{what}: one public port for every destination: {mapped:?}"),
                Nat::RandomFully => assert!(ports.len() > 1, "{what}: a new public port per destination: {mapped:?}"),
            }

            // switchboard probe agrees, word for word, and names the NAT.
            assert_eq!(pr.status.map(|s| s.code()), Some(Some(0)), "{what}: {}\nserver:\n{}", pr.output, server.stderr());
            let v = json(pr);
            let nat = &v["nat"];
            assert_eq!((nat["mapping"].as_str(), nat["filtering"].as_str()), (mapping.as_deref(), filtering.as_deref()), "{what}: probe and natdiscovery disagree: {nat}");
            let kind = match c.nat {
                Nat::Masquerade => "port-restricted-cone",
                Nat::RandomFully => "symmetric",
            };
            assert_eq!((&nat["behind_nat"], nat["type"].as_str(), &nat["second_address"]), (&Value::Bool(true), Some(kind), &Value::Bool(true)), "{what}: {nat}");
            let (local, public) = (nat["local"].as_str().unwrap_or(""), nat["mapped"].as_str().unwrap_or(""));
            assert!(local.starts_with(&format!("{}:", c.lan_ip)) && public.starts_with(&format!("{}:", c.public_ip)), "{what}: {nat}");
            if c.nat == Nat::Masquerade {
                assert_eq!(local.rsplit(':').next(), public.rsplit(':').next(), "{what}: MASQUERADE keeps the client's port: {nat}");
            }
            // The table test B checks with browsers: direct to a port-restricted cone only from the
            // port-restricted cone; TURN between anything here and a symmetric NAT.
            let direct = |other: &str| v["calls"].as_array().and_then(|calls| calls.iter().find(|x| x["other"] == other)).map(|x| x["direct"].clone());
            let to_cone = c.nat == Nat::Masquerade;
            assert_eq!((direct("port-restricted-cone"), direct("symmetric")), (Some(Value::Bool(to_cone)), Some(Value::Bool(false))), "{what}: {}", v["calls"]);
            // And its TURN checks through the NAT work (the relay is the server's public address).
            for t in v["turn"].as_array().expect("turn checks") {
                assert!(t["ok"] == true && t["relayed"].as_str().is_some_and(|r| r.starts_with(&format!("{SERVER_IP}:"))), "{what}: {t}");
            }
        }
        drop(server);
    }
}

/// One Chromium per side, each in its client's namespace, both in `room`; returns each side's `RESULT` JSON.
fn browser_call(topo: &Topology, a: usize, b: usize, room: &str) -> [Value; 2] {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser/nat_call.mjs").display().to_string();
    let base = format!("http://{SERVER_IP}:{HTTP_PORT}/");
    let dir: PathBuf = scratch(room);
    let out = dir.display().to_string();
    let mut sides: Vec<Proc> = [(a, "A"), (b, "B")]
        .iter()
        .map(|&(i, label)| {
            let args = ["netns", "exec", topo.clients[i].ns.as_str(), "node", script.as_str(), base.as_str(), room, label, out.as_str()].map(String::from);
            Proc::spawn(Path::new("ip"), &args, &dir, label)
        })
        .collect();
    let end = Instant::now() + Duration::from_secs(75);
    let reported = |p: &mut Proc| p.stdout().contains("RESULT ") || p.wait(Duration::ZERO).is_some();
    while Instant::now() < end && !sides.iter_mut().all(reported) {
        std::thread::sleep(Duration::from_millis(100));
    }
    // Both reported (or one failed): let both end the call and exit.
    std::fs::write(dir.join("stop"), b"").expect("the stop file");
    let mut results = Vec::new();
    for (p, label) in sides.iter_mut().zip(["A", "B"]) {
        let status = p.wait(Duration::from_secs(15));
        let text = p.stdout();
        println!("{room} {label}:\n{text}{}", p.stderr());
        assert_eq!(status.map(|s| s.success()), Some(true), "{room}: side {label} failed:\n{text}\n{}", p.stderr());
        let line = text.lines().find_map(|l| l.strip_prefix("RESULT ")).unwrap_or_else(|| panic!("{room} {label}: no RESULT in\n{text}"));
        results.push(serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")));
    }
    let _ = std::fs::remove_dir_all(&dir);
    [results.remove(0), results.remove(0)]
}

/// Test B: Chromium pages behind real NATs call each other (mesh, through the web client's p2p rooms) directly
/// where the NAT table says a direct path exists, and through Switchboard's TURN relay where it says TURN is
/// needed. Runs the `switchboard` binary only (see the module's note); two Chromium instances at a time.
#[test]
fn chromium_calls_connect_directly_or_through_the_relay_as_the_nat_table_says() {
    require("node");
    require("chromium");
    let browser_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").exists(),
        "playwright-core is not installed in {}: run the README's test command (it runs npm ci there)",
        browser_dir.display()
    );
    let topo = Topology::build("b", &[Nat::Masquerade, Nat::Masquerade, Nat::RandomFully, Nat::RandomFully]);
    let server = topo.server("switchboard", &[]);
    let relay_url = format!("turn:{SERVER_IP}:{TURN_PORT}");
    // (client a, client b, direct?): what RFC 4787's behaviours predict, and `switchboard probe` says in test A.
    let cases = [
        // Port-restricted cone to port-restricted cone: each side's server-reflexive address works once both sent.
        (0, 1, true),
        // Symmetric to symmetric: each side's checks leave from a port the other side's NAT never sent to.
        (2, 3, false),
        // Port-restricted cone to symmetric: the symmetric side's checks come from a new port, which the cone's
        // address-and-port-dependent filtering (conntrack's, measured in test A) drops.
        (0, 2, false),
    ];
    // The server's relayed bytes (its /stats, read by the pages) before each case.
    let mut relayed_before = 0;
    for (n, (a, b, direct)) in cases.into_iter().enumerate() {
        let (ca, cb) = (&topo.clients[a], &topo.clients[b]);
        let case = format!("{:?} <-> {:?}", ca.nat, cb.nat);
        let room = format!("nat-{}-{n}", std::process::id());
        let t0 = Instant::now();
        let results = browser_call(&topo, a, b, &room);
        let relayed_after = results.iter().filter_map(|r| r["server"]["relayed_bytes"].as_u64()).max().unwrap_or(0);
        let relayed_bytes = relayed_after.saturating_sub(relayed_before);
        relayed_before = relayed_after;
        println!("{case}: {:.1} s, the server relayed {relayed_bytes} bytes during the call", t0.elapsed().as_secs_f64());
        for (r, (me, other)) in results.iter().zip([(ca, cb), (cb, ca)]) {
            let pair = &r["pair"];
            let (local, remote) = (&pair["local"], &pair["remote"]);
            println!("{case}: {} selected pair: local {} {}:{}, remote {} {}:{}", r["label"], local["type"], local["address"], local["port"], remote["type"], remote["address"], remote["port"]);
            assert!(r["framesDecoded"].as_u64().unwrap_or(0) > 0, "{case}: {r}");
            let relayed = local["type"] == "relay" || remote["type"] == "relay";
            if direct {
                // Direct: no relay on either end; Chromium reports the local end as srflx (our router's address) or
                // host, and the remote one as srflx or prflx at the other router's public address (prflx addresses
                // may be hidden: "").
                assert!(!relayed, "{case}: a direct path exists but the pair is relayed: {r}");
                assert!(["host", "srflx", "prflx"].iter().any(|t| local["type"] == *t && remote["type"] != "host"), "{case}: {r}");
                for (end, ip) in [(local, &me.public_ip), (remote, &other.public_ip)] {
                    let addr = end["address"].as_str().unwrap_or("");
                    assert!(addr.is_empty() || addr == ip || (end["type"] == "host" && addr == me.lan_ip), "{case}: {end} is not at {ip}: {r}");
                }
            } else {
                // Through Switchboard: one end of the pair is a relay candidate on our server.
                assert!(relayed, "{case}: TURN is needed but the pair is not relayed: {r}");
                let ours = (local["type"] == "relay" && local["address"] == SERVER_IP && local["url"].as_str().is_some_and(|u| u.starts_with(&relay_url)))
                    || (remote["type"] == "relay" && remote["address"] == SERVER_IP);
                assert!(ours, "{case}: the relay is not Switchboard's at {SERVER_IP}: {r}");
                assert!(relayed_bytes > 10_000, "{case}: the server relayed only {relayed_bytes} bytes: {r}");
            }
        }
    }
    drop(server);
}
