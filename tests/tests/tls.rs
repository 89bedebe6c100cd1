//! TLS, end to end: each server binary with a certificate serves TURN over
//! TLS (coturn's turnutils_uclient -t -S), HTTPS (curl), and reloads its
//! certificate on SIGHUP while connections go on (openssl s_client shows
//! which certificate a new connection gets).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use switchboard_tests::{assert_all_relayed, free_port, peer, require, run, scratch, uclient, uclient_totals, Proc, Server, SERVERS};

const USER: &str = "alice";
const PASS: &str = "wonderland-2718";

/// A server with TLS listeners on free ports; returns it with (TURN/TLS port, HTTPS port).
fn tls_server(bin: &str, cert: &[&str]) -> (Server, u16, u16) {
    let (tls, https) = (free_port(), free_port());
    let (t, h) = (format!("127.0.0.1:{tls}"), format!("127.0.0.1:{https}"));
    let user = format!("{USER}:{PASS}");
    let mut args = vec!["--tls-listen", &t, "--https-listen", &h, "--user", &user, "--allow-loopback-peers"];
    args.extend_from_slice(cert);
    (Server::start(bin, &args), tls, https)
}

/// Writes a fresh self-signed certificate and key (openssl) to `dir`; returns its SHA-256 fingerprint.
fn make_cert(dir: &Path, cn: &str) -> String {
    require("openssl");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let ok = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args(["-subj", &format!("/CN={cn}"), "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl runs");
    assert!(ok.status.success(), "openssl req: {}", String::from_utf8_lossy(&ok.stderr));
    file_fingerprint(&cert)
}

fn file_fingerprint(cert: &Path) -> String {
    let out = Command::new("openssl").args(["x509", "-noout", "-fingerprint", "-sha256", "-in"]).arg(cert).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.trim().rsplit('=').next().unwrap().to_string()
}

/// The fingerprint of the certificate a new TLS connection to `port` is shown.
fn served_fingerprint(port: u16) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect 127.0.0.1:{port} </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256"
        ))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().rsplit('=').next().unwrap_or("").to_string()
}

#[test]
fn turn_over_tls_relays_and_https_serves_the_routes() {
    require("curl");
    for bin in SERVERS {
        let (s, tls, https) = tls_server(bin, &["--self-signed", "localhost"]);
        let banner = s.proc.stdout();
        assert!(banner.contains(&format!("https://127.0.0.1:{https}/")) && banner.contains("SHA-256"), "{bin}: {banner}");
        let (_peer, pp) = peer();
        let r = uclient(tls, pp, &["-t", "-S", "-u", USER, "-w", PASS]);
        assert_all_relayed(&s, &r, &format!("{bin} uclient -t -S"));
        // The certificate served is the one the banner names.
        let shown = served_fingerprint(tls);
        assert!(!shown.is_empty() && banner.contains(&shown), "{bin}: served {shown}, banner:\n{banner}");
        assert_eq!(served_fingerprint(https), shown, "{bin}: one certificate for both listeners");
        // HTTPS: the same routes as HTTP.
        let url = format!("https://127.0.0.1:{https}");
        let r = run("curl", &["-sk".into(), format!("{url}/healthz")], Duration::from_secs(10));
        assert_eq!(r.output.trim(), "ok", "{bin}: {}", r.output);
        let r = run("curl", &["-sk".into(), format!("{url}/stats")], Duration::from_secs(10));
        let v: serde_json::Value = serde_json::from_str(r.output.trim()).unwrap_or_else(|e| panic!("{bin}: /stats over HTTPS: {e}: {}", r.output));
        assert!(v["turn"]["allocations_created"].as_u64().unwrap() >= 4, "{bin}: {v}");
        let r = run("curl", &["-sk".into(), format!("{url}/")], Duration::from_secs(10));
        assert!(r.output.contains("<html"), "{bin}: the web client over HTTPS");
        // Plain HTTP on the TLS port is refused, and the server goes on.
        let r = run("curl", &["-s".into(), "-m".into(), "5".into(), format!("http://127.0.0.1:{https}/healthz")], Duration::from_secs(10));
        assert!(!r.output.contains("ok"), "{bin}: plain HTTP answered on the HTTPS port");
        let r = run("curl", &["-sk".into(), format!("{url}/healthz")], Duration::from_secs(10));
        assert_eq!(r.output.trim(), "ok", "{bin}");
    }
}

#[test]
fn sighup_reloads_the_certificate_and_running_sessions_go_on() {
    for bin in SERVERS {
        let dir = scratch("tls-reload");
        let first = make_cert(&dir, "first");
        let (cert, key) = (dir.join("cert.pem").display().to_string(), dir.join("key.pem").display().to_string());
        let (s, tls, https) = tls_server(bin, &["--cert", &cert, "--pkey", &key]);
        assert_eq!(served_fingerprint(tls), first, "{bin}");
        // A relayed TLS session runs across the reload: 4 clients x 150 messages, 20 ms apart (3 s).
        let (_peer, pp) = peer();
        let running = {
            let p = pp.to_string();
            let sp = tls.to_string();
            let args = ["-t", "-S", "-u", USER, "-w", PASS, "-e", "127.0.0.1", "-r", &p, "-n", "150", "-m", "4", "-l", "160", "-p", &sp, "127.0.0.1"];
            Proc::spawn(Path::new("turnutils_uclient"), &args.map(String::from), &dir, "uclient")
        };
        std::thread::sleep(Duration::from_millis(1000));
        let second = make_cert(&dir, "second");
        assert_ne!(first, second);
        s.proc.signal("HUP");
        let end = std::time::Instant::now() + Duration::from_secs(5);
        while served_fingerprint(tls) != second && std::time::Instant::now() < end {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(served_fingerprint(tls), second, "{bin}: a new connection after SIGHUP gets the new certificate");
        assert_eq!(served_fingerprint(https), second, "{bin}");
        let mut running = running;
        let status = running.wait(Duration::from_secs(30)).unwrap_or_else(|| panic!("{bin}: uclient did not finish"));
        let out = running.stdout() + &running.stderr();
        assert!(status.success(), "{bin}: the session across the reload failed\n{out}");
        let t = uclient_totals(&out).unwrap_or_else(|| panic!("{bin}: no totals in\n{out}"));
        assert_eq!((t.sent, t.received, t.lost), (600, 600, 0), "{bin}: the session across the reload\n{out}");
        // A broken file: the reload is refused and the certificate in use stays.
        std::fs::write(dir.join("cert.pem"), "not a certificate").unwrap();
        s.proc.signal("HUP");
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(served_fingerprint(tls), second, "{bin}: a bad file replaced the certificate");
        assert!(s.proc.stderr().contains("not reloaded"), "{bin}: {}", s.proc.stderr());
    }
}
