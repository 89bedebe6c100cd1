//! Calls in a real browser: Chromium (driven by playwright-core, `tests/browser/call.mjs`) with a fake camera
//! and microphone, using the web client each server binary serves, in the loopback-only namespace the README's
//! test command makes. The script checks, against each binary:
//! 1. two pages in a room decode each other's video and receive audio (and a screenshot shows both videos);
//! 2. with `?relay=1` the selected candidate pair is a relay candidate of our TURN server, and `/stats` shows
//!    relayed bytes growing;
//! 3. a third page gets `full`; chat arrives; a 1 MiB file arrives with the same SHA-256; a leave sends `bye`
//!    and the remaining page takes a new call; snapshot and recording produce downloads;
//! 5. a voice-only call carries no video until a screen is shared into it; mute and unmute;
//! 6. an SFU room: three pages each decode the two others (video and audio), a fourth joins late and receives
//!    all three (and they it), a file over the data channel reaches everyone through the server, /stats shows
//!    every participant, and when one leaves its tracks end on the others;
//! 7. simulcast: a page publishes three layers; the subscriber switches layers from its tile (the `layer`
//!    message); after each switch frames keep being decoded, at that layer's resolution;
//! 8. six pages in one SFU room all decode each other (video and audio); then one leaves and a page that asks for
//!    at most 32 kbit/s (`?maxkbps=32`, less than the others' audio alone) joins: its five tiles show "video paused
//!    (bandwidth)", `/stats` lists the five as paused for it and nothing paused for the others, it keeps receiving
//!    everyone's audio, decodes no paused video, and is never told a video resumed;
//! 9. two SFU rooms at once (two pages each) are placed on two workers, each room whole on one, and both decode;
//!    `/stats` counts one room on each (the server runs its default workers: one per core);
//! 10. over TLS: two pages load the web client from HTTPS (signaling over WSS) and call through TURN over TLS
//!     (`?relay=1&turn=tls`): the selected pair's local candidate is a relay one with relayProtocol `tls`, from our
//!     `turns:` port (the server's self-signed certificate; Chromium runs with --ignore-certificate-errors);
//! 11. the live dashboard (`/dashboard`) charts the relayed bitrate of a relayed call and its numbers change; the
//!     call page's panel shows the path (relay via udp), bitrate, RTT and loss, and they change (screenshots of both
//!     in the server's scratch directory: `dashboard.png`, `call-panel.png`);
//! 4. negative control: one page alone decodes nothing.

use std::path::Path;
use std::time::Duration;

use switchboard_tests::{free_port, require, run, Server, SERVERS};

#[test]
fn browser_calls_through_each_server() {
    require("node");
    require("chromium");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser");
    assert!(
        dir.join("node_modules/playwright-core").exists(),
        "playwright-core is not installed in {}: run the README's test command (it runs npm ci there)",
        dir.display()
    );
    for bin in SERVERS {
        // Browsers relay to each other's relay addresses, which are loopback here.
        let (https, tls) = (free_port(), free_port());
        let (h, t) = (format!("127.0.0.1:{https}"), format!("127.0.0.1:{tls}"));
        // call.mjs's WHIP and WHEP pages present this token.
        let whip = ["--whip-token", "browser-whip-token"];
        // Recordings go to a fresh directory of this run (check 14 downloads them, 15 reads them after a SIGKILL).
        let rec_dir = std::env::temp_dir().join(format!("sb-browser-rec-{}-{bin}", std::process::id()));
        let _ = std::fs::remove_dir_all(&rec_dir);
        let rec = rec_dir.display().to_string();
        let s = Server::start(bin, &["--allow-loopback-peers", "--self-signed", "127.0.0.1", "--https-listen", &h, "--tls-listen", &t, whip[0], whip[1], "--record-dir", &rec]);
        let out = s.dir.join("browser");
        std::fs::create_dir_all(&out).expect("output dir");
        let script = dir.join("call.mjs").display().to_string();
        // The last check kills the server (SIGKILL) mid-recording.
        let args = [script, s.http_port.to_string(), s.port.to_string(), out.display().to_string(), https.to_string(), tls.to_string(), s.proc.pid().to_string(), rec];
        let r = run("node", &args, Duration::from_secs(420));
        println!("{bin}:\n{}", r.output);
        assert_eq!(r.status.map(|st| st.success()), Some(true), "{bin}: browser checks failed\n{}\nserver stderr:\n{}", r.output, s.proc.stderr());
        assert!(r.output.contains("4. negative control") && r.output.contains("15. a server killed"), "{bin}: not every check ran\n{}", r.output);
    }
}
