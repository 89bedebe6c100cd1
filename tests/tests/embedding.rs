//! The embedding example (`core/examples/blocking_udp.rs`: the core in a
//! plain blocking std::net loop) is a working server: coturn's clients get
//! their reflexive address from it and relay through it.

use std::time::Duration;

use switchboard_tests::{example, free_port, peer, require, run, scratch, uclient_totals, Proc};

fn start() -> (Proc, u16) {
    let port = free_port();
    let dir = scratch("blocking_udp");
    let mut p = Proc::spawn(&example("blocking_udp"), &[format!("127.0.0.1:{port}"), "--allow-loopback-peers".into()], &dir, "example");
    p.wait_for("blocking_udp: STUN/TURN on", Duration::from_secs(10));
    (p, port)
}

#[test]
fn blocking_example_answers_stunclient() {
    require("turnutils_stunclient");
    let (_ex, port) = start();
    let r = run("turnutils_stunclient", &["-p".into(), port.to_string(), "127.0.0.1".into()], Duration::from_secs(20));
    assert_eq!(r.status.map(|s| s.success()), Some(true), "{}", r.output);
    assert!(r.output.contains("UDP reflexive addr: 127.0.0.1:"), "{}", r.output);
}

#[test]
fn blocking_example_relays_for_uclient() {
    require("turnutils_uclient");
    let (ex, port) = start();
    let (_peer, pp) = peer();
    // -c: no RTCP allocations (the example does not offer EVEN-PORT reservations).
    let args = ["-c", "-u", "demo", "-w", "demo", "-e", "127.0.0.1", "-r", &pp.to_string(), "-X", "-n", "100", "-m", "4", "-l", "160", "-p", &port.to_string(), "127.0.0.1"];
    let r = run("turnutils_uclient", &args.map(String::from), Duration::from_secs(60));
    assert_eq!(r.status.map(|s| s.success()), Some(true), "{}\n{}", r.output, ex.stderr());
    let t = uclient_totals(&r.output).unwrap_or_else(|| panic!("no totals in\n{}", r.output));
    assert_eq!((t.sent, t.received, t.lost), (400, 400, 0), "{}", r.output);
}
