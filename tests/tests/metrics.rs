//! `/metrics`, end to end: each server binary's page parses with Prometheus's
//! own OpenMetrics parser (Debian's python3-prometheus-client), and its
//! counters move with traffic relayed by coturn's turnutils_uclient.

use std::collections::BTreeMap;
use std::time::Duration;

use switchboard_tests::{peer, require, run, Server, SERVERS};

/// Parses a metrics page with prometheus_client's OpenMetrics parser: each sample's name and value.
fn parse(page: &str) -> BTreeMap<String, f64> {
    let dir = switchboard_tests::scratch("metrics");
    let file = dir.join("metrics.txt");
    std::fs::write(&file, page).unwrap();
    let script = format!(
        "from prometheus_client.openmetrics.parser import text_string_to_metric_families as p\n\
         for f in p(open('{}').read()):\n    for s in f.samples:\n        print(s.name, s.value)",
        file.display()
    );
    let r = run("/usr/bin/python3", &["-c".into(), script], Duration::from_secs(30));
    assert_eq!(r.status.map(|s| s.success()), Some(true), "the parser refused the page:\n{}\n{page}", r.output);
    r.output
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(n, v)| (n.to_string(), v.trim().parse::<f64>().unwrap()))
        .collect()
}

fn metrics(s: &Server) -> BTreeMap<String, f64> {
    std::thread::sleep(Duration::from_millis(300));
    let (code, page) = s.get("/metrics");
    assert_eq!(code, 200);
    parse(&page)
}

#[test]
fn metrics_parse_as_openmetrics_and_move_with_traffic() {
    require("turnutils_uclient");
    for bin in SERVERS {
        let s = Server::start(bin, &["--user", "alice:pw", "--allow-loopback-peers"]);
        let before = metrics(&s);
        for name in ["switchboard_turn_allocations", "switchboard_workers", "switchboard_process_cpu_seconds_total", "switchboard_process_resident_memory_bytes"] {
            assert!(before.contains_key(name), "{bin}: no {name} in {before:?}");
        }
        let (_peer, pp) = peer();
        let args: Vec<String> = ["-u", "alice", "-w", "pw", "-e", "127.0.0.1", "-r", &pp.to_string(), "-X", "-n", "50", "-m", "2", "-l", "100", "-p", &s.port.to_string(), "127.0.0.1"]
            .map(String::from)
            .to_vec();
        let r = run("turnutils_uclient", &args, Duration::from_secs(60));
        assert_eq!(r.status.map(|s| s.success()), Some(true), "{bin}: {}", r.output);
        let after = metrics(&s);
        let grew = |name: &str, by: f64| {
            let (a, b) = (before.get(name).copied().unwrap_or(0.0), after.get(name).copied().unwrap_or(0.0));
            assert!(b >= a + by, "{bin}: {name} went from {a} to {b}, expected +{by}");
        };
        grew("switchboard_turn_relayed_to_peer_packets_total", 100.0);
        grew("switchboard_turn_relayed_to_client_packets_total", 100.0);
        grew("switchboard_turn_relayed_to_peer_bytes_total", 100.0 * 100.0);
        grew("switchboard_turn_allocations_created_total", 2.0);
        grew("switchboard_turn_requests_total", 4.0);
    }
}
