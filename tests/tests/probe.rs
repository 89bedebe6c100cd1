//! `switchboard probe`, end to end, against both server binaries on loopback: with `--alt-ip 127.0.0.2` it finds
//! no NAT (endpoint-independent mapping and filtering, as coturn's turnutils_natdiscovery does against the same
//! server), and checks TURN over UDP, TCP and TLS with a relayed round trip; without a second address it says so;
//! wrong credentials and an absent server are clear failures. The TURN checks use RFC 8489's SHA-256 password
//! algorithm and MESSAGE-INTEGRITY-SHA256, which the server offers.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use switchboard_tests::{bin, free_port, require, run, scratch, Run, Server, SERVERS};

/// Runs `NAME probe` with `args` (both binaries have the command; it is the same code).
fn probe(name: &str, args: &[String]) -> Run {
    let mut all = vec!["probe".to_string()];
    all.extend_from_slice(args);
    run(bin(name).to_str().expect("a UTF-8 path"), &all, Duration::from_secs(60))
}

/// The JSON a `--json` run printed.
fn json(r: &Run) -> Value {
    let start = r.output.find('{').unwrap_or_else(|| panic!("no JSON in\n{}", r.output));
    serde_json::from_str(&r.output[start..]).unwrap_or_else(|e| panic!("{e}: {}", r.output))
}

/// A certificate for 127.0.0.1 and localhost that rustls takes as a server's (openssl; not a CA).
fn make_cert(dir: &Path) -> (PathBuf, PathBuf) {
    require("openssl");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl runs");
    assert!(out.status.success(), "openssl req: {}", String::from_utf8_lossy(&out.stderr));
    (cert, key)
}

#[test]
fn probe_finds_no_nat_on_loopback_as_natdiscovery_does_and_checks_turn_over_udp_tcp_and_tls() {
    require("turnutils_natdiscovery");
    for name in SERVERS {
        let dir = scratch("probe");
        let (cert, key) = make_cert(&dir);
        let (tls, https) = (free_port(), free_port());
        let (tls_addr, https_addr) = (format!("127.0.0.1:{tls}"), format!("127.0.0.1:{https}"));
        let (cert_s, key_s) = (cert.display().to_string(), key.display().to_string());
        let args = ["--alt-ip", "127.0.0.2", "--user", "u:p", "--allow-loopback-peers", "--cert", &cert_s, "--pkey", &key_s];
        let s = Server::start(name, &[&args[..], &["--tls-listen", &tls_addr, "--https-listen", &https_addr]].concat());
        let server = format!("127.0.0.1:{}", s.port);
        let with = |user: &str, json: bool| {
            let mut a = vec![server.clone(), "--user".into(), user.into(), "--turn-tls".into(), tls_addr.clone(), "--ca".into(), cert_s.clone()];
            if json {
                a.push("--json".into());
            }
            probe(name, &a)
        };

        let r = with("u:p", true);
        assert_eq!(r.status.map(|s| s.code()), Some(Some(0)), "{name}: {}\nserver:\n{}", r.output, s.proc.stderr());
        let v = json(&r);
        let nat = &v["nat"];
        assert_eq!(v["reached"], true, "{name}: {v}");
        assert_eq!((nat["mapping"].as_str(), nat["filtering"].as_str()), (Some("endpoint-independent"), Some("endpoint-independent")), "{name}: {nat}");
        assert_eq!((&nat["behind_nat"], nat["type"].as_str(), &nat["second_address"]), (&Value::Bool(false), Some("open-internet"), &Value::Bool(true)), "{name}: {nat}");
        assert_eq!(nat["mapped"], nat["local"], "{name}: on loopback the public address is the local one");
        assert_eq!(nat["other_address"].as_str(), Some(format!("127.0.0.2:{}", s.port + 1).as_str()), "{name}: {nat}");
        for origin in [format!("127.0.0.1:{}", s.port), format!("127.0.0.2:{}", s.port), format!("127.0.0.2:{}", s.port + 1)] {
            assert!(nat["answered_from"].as_array().unwrap().iter().any(|a| a == origin.as_str()), "{name}: no answer from {origin}: {nat}");
        }
        assert!(v["calls"].as_array().unwrap().iter().all(|c| c["direct"] == true), "{name}: {v}");
        // TURN: allocate, permission, a relayed round trip each way with its RTT, released, over all three.
        let turn = v["turn"].as_array().unwrap();
        let transports: Vec<&str> = turn.iter().map(|t| t["transport"].as_str().unwrap()).collect();
        assert_eq!(transports, ["udp", "tcp", "tls"], "{name}");
        for t in turn {
            assert_eq!((&t["ok"], &t["permission"], &t["channel"], &t["released"]), (&Value::Bool(true), &Value::Bool(true), &Value::Bool(true), &Value::Bool(true)), "{name}: {t}");
            for rtt in ["rtt_ms", "rtt_channel_ms"] {
                assert!(t[rtt].as_f64().is_some_and(|ms| ms > 0.0), "{name}: {rtt} in {t}");
            }
            assert!(t["relayed"].as_str().unwrap().starts_with("127.0.0.1:"), "{name}: {t}");
            // The server offers SHA-256 (RFC 8489) and the probe takes it: every answer checked with
            // MESSAGE-INTEGRITY-SHA256 and the SHA-256 key.
            assert_eq!(t["password_algorithm"], "SHA-256", "{name}: {t}");
        }
        assert_eq!(s.stats()["turn"]["allocations"], 0, "{name}: every allocation was released");

        // coturn's client agrees: endpoint-independent mapping and filtering.
        let args = ["-m".into(), "-f".into(), "-p".into(), s.port.to_string(), "127.0.0.1".into()];
        let nd = run("turnutils_natdiscovery", &args, Duration::from_secs(30));
        assert!(nd.output.contains("NAT with Endpoint Independent Mapping!") && nd.output.contains("NAT with Endpoint Independent Filtering!"), "{name}: {}", nd.output);

        // The same in words.
        let r = with("u:p", false);
        for words in ["Mapping:         endpoint-independent", "Filtering:       endpoint-independent", "You are not behind a NAT", "symmetric NAT", "tls 127.0.0.1"] {
            assert!(r.output.contains(words), "{name}: no {words:?} in\n{}", r.output);
        }
        assert_eq!(r.output.matches("ok: allocated").count(), 3, "{name}: {}", r.output);

        // Wrong credentials: a clear failure, and a nonzero exit.
        let r = with("u:nope", true);
        assert_eq!(r.status.map(|s| s.code()), Some(Some(1)), "{name}: {}", r.output);
        let v = json(&r);
        for t in v["turn"].as_array().unwrap() {
            assert_eq!((&t["ok"], &t["wrong_credentials"]), (&Value::Bool(false), &Value::Bool(true)), "{name}: {t}");
            assert!(t["error"].as_str().unwrap().contains("wrong credentials"), "{name}: {t}");
        }
        let r = with("u:nope", false);
        assert!(r.output.contains("FAILED: the server refused the user name or password (wrong credentials)"), "{name}: {}", r.output);
    }
}

#[test]
fn without_a_second_address_the_probe_says_so_and_an_absent_server_fails() {
    for name in SERVERS {
        let s = Server::start(name, &["--allow-loopback-peers", "--static-auth-secret", "probe-secret"]);
        let server = format!("127.0.0.1:{}", s.port);
        let r = probe(name, &[server.clone(), "--static-auth-secret".into(), "probe-secret".into(), "--json".into()]);
        assert_eq!(r.status.map(|s| s.code()), Some(Some(0)), "{name}: {}", r.output);
        let v = json(&r);
        let nat = &v["nat"];
        assert_eq!((&nat["second_address"], &nat["filtering"], &nat["type"]), (&Value::Bool(false), &Value::Null, &Value::Null), "{name}: {nat}");
        assert_eq!(nat["mapped"], nat["local"], "{name}: the public address is still known");
        assert!(nat["problems"][0].as_str().unwrap().contains("no second address"), "{name}: {nat}");
        // REST credentials made from the secret, as `switchboard token` does.
        let turn = v["turn"].as_array().unwrap();
        assert_eq!(turn.len(), 2, "{name}: udp and tcp (no --turn-tls)");
        assert!(turn.iter().all(|t| t["ok"] == true), "{name}: {v}");
        let r = probe(name, std::slice::from_ref(&server));
        assert!(r.output.contains("no second address") && r.output.contains("Filtering:       unknown"), "{name}: {}", r.output);
    }
    // Nobody there: the probe gives up after its timeout and exits nonzero.
    let nobody = format!("127.0.0.1:{}", free_port());
    let r = probe("switchboard", &[nobody, "--timeout".into(), "0.5".into(), "--json".into()]);
    assert_eq!(r.status.map(|s| s.code()), Some(Some(1)), "{}", r.output);
    assert_eq!(json(&r)["reached"], false, "{}", r.output);
}
