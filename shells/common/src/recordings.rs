//! Recording files on disk: what the core's SFU decided to write
//! ([`RecordOp`]s, one file per recorded track) goes to `--record-dir`, and
//! `/recordings` lists the files with download links.
//!
//! Each append is one `write(2)` of a whole unit (a header, an Ogg page, an
//! IVF frame), unbuffered, so a server killed mid-recording leaves files
//! readable up to the last unit written; header patches are positioned
//! writes; a file is synced when its track's recording ends. A file that
//! cannot be written is counted and dropped, and the server goes on.
//!
//! The listing and downloads need the WHIP token (`Authorization: Bearer`,
//! or `?token=` so that links work in a browser). A download is read whole
//! into memory on worker 0 and queued as one write (at most [`MAX_DOWNLOAD`];
//! larger ones are to be copied from the directory).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use switchboard_core::hash::Map;
use switchboard_core::record::FileOp;
use switchboard_core::sfu::RecordOp;
use switchboard_core::whip::{token_ok, WhipConfig};
use tracing::{info, warn};

use crate::http::router::Response;
use crate::http::Request;

/// Largest recording served by `/recordings/ROOM/FILE` (it is sent from memory, whole).
pub const MAX_DOWNLOAD: u64 = 64 << 20;

/// The files of one worker's recordings.
pub struct Recorder {
    dir: PathBuf,
    files: Map<u64, (File, PathBuf)>,
    /// Operations that failed (a file not created or not written).
    pub errors: u64,
}

impl Recorder {
    /// Recordings under `dir` (created when the first one starts).
    pub fn new(dir: PathBuf) -> Self {
        Recorder { dir, files: crate::new_map(), errors: 0 }
    }

    /// Carries out one operation the core decided for file `file`.
    pub fn apply(&mut self, file: u64, op: RecordOp) {
        let result = match op {
            RecordOp::Open { name } => self.open(file, &name),
            RecordOp::Write(FileOp::Append(bytes)) => match self.files.get_mut(&file) {
                Some((f, _)) => f.write_all(&bytes),
                None => Ok(()),
            },
            RecordOp::Write(FileOp::Patch { offset, bytes }) => match self.files.get(&file) {
                Some((f, _)) => f.write_all_at(&bytes, offset),
                None => Ok(()),
            },
            RecordOp::Close => match self.files.remove(&file) {
                Some((f, path)) => {
                    info!(path = %path.display(), "recording finished");
                    f.sync_data()
                }
                None => Ok(()),
            },
            _ => Ok(()),
        };
        if let Err(e) = result {
            self.errors += 1;
            warn!(file, "recording: {e}; this file is dropped");
            self.files.remove(&file);
        }
    }

    /// Creates `dir/ROOM/STAMP-NAME` for `ROOM/NAME` (the core made both parts
    /// safe); the stamp is the UTC time, and a number follows if it exists.
    fn open(&mut self, file: u64, name: &str) -> std::io::Result<()> {
        let (room, base) = name.split_once('/').unwrap_or(("_", name));
        let dir = self.dir.join(room);
        std::fs::create_dir_all(&dir)?;
        let stamp = utc_stamp(crate::unix_now());
        let mut n = 0;
        loop {
            let leaf = if n == 0 { format!("{stamp}-{base}") } else { format!("{stamp}-{n}-{base}") };
            let path = dir.join(leaf);
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(f) => {
                    info!(path = %path.display(), "recording started");
                    self.files.insert(file, (f, path));
                    return Ok(());
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 100 => n += 1,
                Err(e) => return Err(e),
            }
        }
    }

    /// The recording directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Files open now.
    pub fn open_files(&self) -> usize {
        self.files.len()
    }
}

/// `YYYYMMDDTHHMMSSZ` for unix time `secs`.
fn utc_stamp(secs: u64) -> String {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z", rem / 3600, rem / 60 % 60, rem % 60)
}

/// Whether `GET path` is the recordings listing or a download.
pub fn is_listing(req: &Request) -> bool {
    (req.method == "GET" || req.method == "HEAD") && (req.path == "/recordings" || req.path == "/recordings.json" || req.path.starts_with("/recordings/"))
}

/// A path part as the core makes them: `[A-Za-z0-9._-]`, not a dot name.
fn safe_part(s: &str) -> bool {
    !s.is_empty() && !s.chars().all(|c| c == '.') && s.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

/// The answer to `GET /recordings`, `/recordings.json` or `/recordings/ROOM/FILE`.
pub fn reply(dir: Option<&Path>, auth: &WhipConfig, req: &Request) -> Response {
    let respond = |status, content_type, body: Vec<u8>| Response { status, content_type, body: body.into(), close: false };
    let token = req
        .authorization
        .as_deref()
        .and_then(|a| a.strip_prefix("Bearer "))
        .map(str::to_owned)
        .or_else(|| req.query.split('&').find_map(|kv| kv.strip_prefix("token=")).map(percent_decode));
    if !token.as_ref().is_some_and(|t| token_ok(auth, crate::unix_now(), t.trim())) {
        return respond("401 Unauthorized", "text/plain", b"a token is required: Authorization: Bearer TOKEN, or ?token=TOKEN\n".to_vec());
    }
    let Some(dir) = dir else {
        return respond("404 Not Found", "text/plain", b"this server does not record (start it with --record-dir)\n".to_vec());
    };
    if let Some(rest) = req.path.strip_prefix("/recordings/") {
        let Some((room, file)) = rest.split_once('/').filter(|(r, f)| safe_part(r) && safe_part(f)) else {
            return respond("404 Not Found", "text/plain", b"no such recording\n".to_vec());
        };
        let path = dir.join(room).join(file);
        let content_type = match path.extension().and_then(|e| e.to_str()) {
            Some("ogg") => "audio/ogg",
            Some("ivf") => "video/x-ivf",
            Some("h264") => "video/h264",
            _ => "application/octet-stream",
        };
        return match std::fs::metadata(&path) {
            Ok(m) if m.len() > MAX_DOWNLOAD => respond("413 Content Too Large", "text/plain", b"larger than this server serves; copy it from the recording directory\n".to_vec()),
            Ok(_) => match std::fs::read(&path) {
                Ok(bytes) => respond("200 OK", content_type, bytes),
                Err(_) => respond("404 Not Found", "text/plain", b"no such recording\n".to_vec()),
            },
            Err(_) => respond("404 Not Found", "text/plain", b"no such recording\n".to_vec()),
        };
    }
    let list = list(dir);
    if req.path == "/recordings.json" {
        let v: Vec<serde_json::Value> = list
            .iter()
            .map(|(room, file, size)| serde_json::json!({"room": room, "file": file, "bytes": size, "url": format!("/recordings/{room}/{file}")}))
            .collect();
        return respond("200 OK", "application/json", serde_json::Value::Array(v).to_string().into_bytes());
    }
    let token_q = token.map(|t| format!("?token={}", percent_encode(&t))).unwrap_or_default();
    let mut html = String::from("<!doctype html><meta charset=utf-8><title>Recordings</title><h1>Recordings</h1>");
    if list.is_empty() {
        html.push_str("<p>None yet.</p>");
    }
    let mut last_room = None;
    for (room, file, size) in &list {
        if last_room != Some(room) {
            if last_room.is_some() {
                html.push_str("</ul>");
            }
            html.push_str(&format!("<h2>{room}</h2><ul>"));
            last_room = Some(room);
        }
        html.push_str(&format!("<li><a download href=\"/recordings/{room}/{file}{token_q}\">{file}</a> ({} KiB)</li>", size.div_ceil(1024)));
    }
    if last_room.is_some() {
        html.push_str("</ul>");
    }
    respond("200 OK", "text/html; charset=utf-8", html.into_bytes())
}

/// (room, file, bytes) of every recording under `dir`, by room then file name.
fn list(dir: &Path) -> Vec<(String, String, u64)> {
    let mut out = Vec::new();
    let Ok(rooms) = std::fs::read_dir(dir) else { return out };
    for room in rooms.flatten() {
        let Some(room_name) = room.file_name().to_str().map(str::to_owned).filter(|r| safe_part(r)) else { continue };
        let Ok(files) = std::fs::read_dir(room.path()) else { continue };
        for f in files.flatten() {
            let (Some(name), Ok(meta)) = (f.file_name().to_str().map(str::to_owned), f.metadata()) else { continue };
            if meta.is_file() && safe_part(&name) {
                out.push((room_name.clone(), name, meta.len()));
            }
        }
    }
    out.sort();
    out
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if let Some(v) = s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn percent_encode(s: &str) -> String {
    s.bytes().map(|b| if b.is_ascii_alphanumeric() || b"-._~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_are_utc_civil_time() {
        assert_eq!(utc_stamp(0), "19700101T000000Z");
        assert_eq!(utc_stamp(1_795_000_000), "20261118T110640Z");
        assert_eq!(utc_stamp(951_782_400), "20000229T000000Z");
    }

    #[test]
    fn files_are_written_patched_listed_and_served_with_a_token() {
        let dir = std::env::temp_dir().join(format!("sb-rec-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut r = Recorder::new(dir.clone());
        r.apply(1, RecordOp::Open { name: "room/peer-audio-0.ogg".into() });
        r.apply(1, RecordOp::Write(FileOp::Append(b"hello world".to_vec())));
        r.apply(1, RecordOp::Write(FileOp::Patch { offset: 6, bytes: b"WORLD".to_vec() }));
        r.apply(1, RecordOp::Close);
        // A second file of the same name in the same second gets a number.
        r.apply(2, RecordOp::Open { name: "room/peer-audio-0.ogg".into() });
        r.apply(2, RecordOp::Close);
        assert_eq!((r.errors, r.open_files()), (0, 0));
        let auth = WhipConfig { tokens: vec!["t0k".into()], secret: None };
        let get = |path: &str, query: &str| {
            let req = Request { method: "GET".into(), path: path.into(), query: query.into(), ..Default::default() };
            reply(Some(&dir), &auth, &req)
        };
        assert_eq!(get("/recordings", "").status, "401 Unauthorized");
        assert_eq!(get("/recordings", "token=nope").status, "401 Unauthorized");
        let listing = get("/recordings.json", "token=t0k");
        let v: serde_json::Value = serde_json::from_slice(&listing.body).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 2, "{v}");
        let written = v.as_array().unwrap().iter().find(|f| f["bytes"] == 11).expect("the written file");
        let url = written["url"].as_str().unwrap().to_owned();
        let file = get(&url, "token=t0k");
        assert_eq!((file.status, file.content_type, &file.body[..]), ("200 OK", "audio/ogg", &b"hello WORLD"[..]));
        let html = get("/recordings", "token=t0k");
        assert!(String::from_utf8_lossy(&html.body).contains(&format!("href=\"{url}?token=t0k\"")));
        // Nothing outside the directory is reachable.
        for bad in ["/recordings/../etc/passwd", "/recordings/room/..", "/recordings/room/a/b", "/recordings/%2e%2e/x"] {
            assert_eq!(get(bad, "token=t0k").status, "404 Not Found", "{bad}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
