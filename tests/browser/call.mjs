// Browser tests of calls through a running Switchboard server: Chromium (playwright-core) with a fake camera
// and microphone, using the real web client. Run by tests/tests/browser.rs inside a loopback-only network
// namespace:
//
//   node tests/browser/call.mjs HTTP_PORT TURN_PORT OUT_DIR [HTTPS_PORT TLS_PORT]
//
// Prints one line per check; exits 1 on the first failure (with the pages' logs), 0 when all pass.
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { chromium } from 'playwright-core';

const [httpPort, turnPort, outDir, httpsPort, tlsPort, serverPid, recordDir] = process.argv.slice(2);
if (!httpPort || !turnPort || !outDir) {
  console.error('usage: call.mjs HTTP_PORT TURN_PORT OUT_DIR');
  process.exit(2);
}
const base = `http://127.0.0.1:${httpPort}/`;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const pages = [];

function check(ok, what, detail = '') {
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${what}${detail ? `: ${detail}` : ''}`);
  if (!ok) throw new Error(`${what} ${detail}`);
}

async function until(what, fn, timeoutMs = 20000) {
  const end = Date.now() + timeoutMs;
  let last;
  while (Date.now() < end) {
    last = await fn();
    if (last) return last;
    await sleep(250);
  }
  check(false, what, `not within ${timeoutMs} ms (last: ${JSON.stringify(last)})`);
}

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: [
    '--no-sandbox',
    '--use-fake-ui-for-media-stream',
    '--use-fake-device-for-media-stream',
    '--allow-loopback-in-peer-connection',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--autoplay-policy=no-user-gesture-required',
    '--auto-select-desktop-capture-source=Entire screen',
    // The TLS checks use the server's self-signed certificate.
    '--ignore-certificate-errors',
  ],
});

async function open(query, label, at = base) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 760 }, ignoreHTTPSErrors: true });
  const page = await context.newPage();
  page.label = label;
  page.consoleLines = [];
  page.on('console', (m) => page.consoleLines.push(`${label}: ${m.text()}`));
  page.on('pageerror', (e) => page.consoleLines.push(`${label}: page error ${e.message}`));
  await page.goto(`${at}?${query}`);
  pages.push(page);
  return page;
}

/** The largest framesDecoded of inbound video and packetsReceived of inbound audio on the page's connection. */
const media = (page) =>
  page.evaluate(async () => {
    const pc = window.sb.pc;
    if (!pc) return { video: 0, audio: 0 };
    const stats = await pc.getStats();
    let video = 0;
    let audio = 0;
    stats.forEach((r) => {
      if (r.type === 'inbound-rtp' && r.kind === 'video') video = Math.max(video, r.framesDecoded || 0);
      if (r.type === 'inbound-rtp' && r.kind === 'audio') audio = Math.max(audio, r.packetsReceived || 0);
    });
    return { video, audio };
  });

const decodes = async (page) => {
  const m = await media(page);
  return m.video > 0 && m.audio > 0 ? m : null;
};

/** The selected candidate pair: local and remote candidate types and addresses. */
const selectedPair = (page) =>
  page.evaluate(async () => {
    const stats = await window.sb.pc.getStats();
    let pair = null;
    stats.forEach((r) => {
      if (r.type === 'transport' && r.selectedCandidatePairId) pair = stats.get(r.selectedCandidatePairId);
    });
    if (!pair) return null;
    const l = stats.get(pair.localCandidateId);
    const r = stats.get(pair.remoteCandidateId);
    return { state: pair.state, local: { type: l.candidateType, url: l.url, relayProtocol: l.relayProtocol, address: l.address, port: l.port }, remote: { type: r.candidateType, address: r.address, port: r.port } };
  });

const serverStats = async () => (await fetch(`${base}stats`)).json();
const types = (page) => page.evaluate(() => window.sb.messages.map((m) => m.type));

async function closeAll() {
  for (const p of pages.splice(0)) await p.context().close();
}

async function directCall() {
  const room = `direct-${randomBytes(4).toString('hex')}`;
  const a = await open(`room=${room}&name=Ada&autojoin=1`, 'A');
  const b = await open(`room=${room}&name=Bob&autojoin=1`, 'B');
  const ma = await until('A decodes B (video frames and audio packets)', () => decodes(a));
  const mb = await until('B decodes A (video frames and audio packets)', () => decodes(b));
  check(true, '1. two pages in a room decode each other', `A ${JSON.stringify(ma)}, B ${JSON.stringify(mb)}`);
  const pair = await selectedPair(a);
  console.log(`     selected pair without forced relay: ${JSON.stringify(pair)}`);
  // What a person would see: both videos playing.
  await until('both video elements show a picture', () =>
    a.evaluate(() => ['remote-video', 'local-video'].every((id) => document.getElementById(id).videoWidth > 0)),
  );
  await sleep(1000);
  await a.screenshot({ path: `${outDir}/call.png` });
  check(true, 'screenshot of a call in progress', `${outDir}/call.png`);
  await closeAll();
}

async function relayedCall() {
  const room = `relay-${randomBytes(4).toString('hex')}`;
  const a = await open(`room=${room}&name=Ada&relay=1&autojoin=1`, 'A');
  const b = await open(`room=${room}&name=Bob&relay=1&autojoin=1`, 'B');
  check(await a.evaluate(() => document.getElementById('relay').checked), '?relay=1 ticks the force-relay box');
  await until('A decodes B through the relay', () => decodes(a));
  await until('B decodes A through the relay', () => decodes(b));
  for (const p of [a, b]) {
    const pair = await until(`${p.label}: a selected candidate pair`, () => selectedPair(p));
    const ours = pair.local.type === 'relay' && String(pair.local.url || '').includes(`:${turnPort}`);
    check(ours, `2. ${p.label}'s selected pair uses a relay candidate of our TURN server`, JSON.stringify(pair));
  }
  const before = await serverStats();
  await sleep(2000);
  const after = await serverStats();
  check(before.allocations >= 2, '/stats shows the allocations', `allocations ${before.allocations}`);
  check(after.relayed_bytes > before.relayed_bytes + 10000, '/stats relayed bytes grow while media flows', `${before.relayed_bytes} -> ${after.relayed_bytes}`);
  await closeAll();
}

/**
 * 11. The live dashboard and the call panel: during a relayed call, /dashboard draws the relayed bitrate and its
 * numbers change; the call page's panel shows the path (relay via udp), bitrate, RTT and loss, and they change.
 */
async function dashboardAndCallPanel() {
  const room = `dash-${randomBytes(4).toString('hex')}`;
  const a = await open(`room=${room}&name=Ada&relay=1&autojoin=1`, 'A');
  const b = await open(`room=${room}&name=Bob&relay=1&autojoin=1`, 'B');
  await until('A decodes B through the relay', () => decodes(a));
  const panel = await until('A\'s call panel shows a relayed path and a bitrate', async () => {
    const c = await a.evaluate(() => ({ ...window.sb.callStats, prev: undefined, text: document.getElementById('callstats').innerText }));
    return c.samples >= 2 && c.path && c.path.startsWith('relay via') && c.inBps > 10000 && c.rttMs != null ? c : null;
  });
  check(true, '11. the call panel shows path, bitrate, RTT and loss', panel.text);
  const before = await a.evaluate(() => document.getElementById('callstats').innerText);
  await sleep(2500);
  const after = await a.evaluate(() => document.getElementById('callstats').innerText);
  check(before !== after, 'the call panel\'s numbers change', `${before} -> ${after}`);
  await a.screenshot({ path: `${outDir}/call-panel.png` });
  const d = await open('', 'Dash', `${base}dashboard`);
  const first = await until('the dashboard draws a few samples with relayed traffic', async () => {
    const x = await d.evaluate(() => ({ samples: window.dashboard.samples, relay: window.dashboard.series.relay.at(-1) || 0, now: document.getElementById('relay-now').textContent, points: document.querySelector('#relay-chart polyline')?.getAttribute('points') || '' }));
    return x.samples >= 3 && x.relay > 10000 ? x : null;
  });
  check(first.points.split(' ').length >= 3, 'the dashboard charts the relayed bitrate', `now ${first.now}, ${first.points.split(' ').length} points`);
  await sleep(2500);
  const second = await d.evaluate(() => ({ samples: window.dashboard.samples, relay: window.dashboard.series.relay.at(-1) || 0, now: document.getElementById('relay-now').textContent, points: document.querySelector('#relay-chart polyline')?.getAttribute('points') || '', cards: document.getElementById('cards').innerText }));
  check(second.samples > first.samples && second.relay !== first.relay && second.points !== first.points, 'the dashboard\'s numbers change', `${first.samples} -> ${second.samples} samples, ${Math.round(first.relay)} -> ${Math.round(second.relay)} bit/s (${first.now} -> ${second.now})`);
  check(/TURN allocations\s*[1-9]/.test(second.cards), 'the dashboard shows the allocations', second.cards.replace(/\n/g, ' '));
  await d.screenshot({ path: `${outDir}/dashboard.png`, fullPage: true });
  check(true, 'screenshots of the dashboard and the call panel', `${outDir}/dashboard.png, ${outDir}/call-panel.png`);
  await closeAll();
}

/** 10. Over TLS: the web client from HTTPS (signaling over WSS), and a call relayed through TURN over TLS (`turns:`). */
async function tlsCall() {
  check(!!httpsPort && !!tlsPort, 'the server has TLS listeners (HTTPS_PORT and TLS_PORT given)');
  const at = `https://127.0.0.1:${httpsPort}/`;
  const room = `tls-${randomBytes(4).toString('hex')}`;
  const a = await open(`room=${room}&name=Ada&relay=1&turn=tls&autojoin=1`, 'A', at);
  const b = await open(`room=${room}&name=Bob&relay=1&turn=tls&autojoin=1`, 'B', at);
  check(await a.evaluate(() => window.isSecureContext && location.protocol === 'https:'), '10. the web client loads over HTTPS (a secure context)');
  await until('A decodes B through TURN over TLS', () => decodes(a));
  await until('B decodes A through TURN over TLS', () => decodes(b));
  for (const p of [a, b]) {
    const pair = await until(`${p.label}: a selected candidate pair`, () => selectedPair(p));
    const tls = pair.local.type === 'relay' && pair.local.relayProtocol === 'tls' && String(pair.local.url || '').includes(`:${tlsPort}`);
    check(tls, `${p.label}'s selected pair is a relay candidate over turns: (TLS)`, JSON.stringify(pair));
  }
  await closeAll();
}

async function roomLife() {
  const room = `room-${randomBytes(4).toString('hex')}`;
  const a = await open(`room=${room}&name=Ada&autojoin=1`, 'A');
  const b = await open(`room=${room}&name=Bob&autojoin=1`, 'B');
  await until('A and B are in a call', async () => (await decodes(a)) && (await decodes(b)));
  const c = await open(`room=${room}&name=Cy&autojoin=1`, 'C');
  await until('3. a third page gets "full"', async () => (await types(c)).includes('full'));
  check((await c.textContent('#status')).includes('full'), 'the third page says the room is full');

  // Chat, typed as a person would.
  await a.fill('#chat-input', 'hello from Ada');
  await a.click('#chat-send');
  await until('a chat line typed on A appears on B', async () => (await b.textContent('#chat-log')).includes('Ada: hello from Ada'));
  check(true, 'chat line delivered');

  // A 1 MiB file over the data channel.
  const file = randomBytes(1024 * 1024);
  const sha = createHash('sha256').update(file).digest('hex');
  await until('A\'s data channel is open', () => a.evaluate(() => !document.getElementById('file-send').disabled));
  await a.setInputFiles('#file-input', { name: 'random.bin', mimeType: 'application/octet-stream', buffer: file });
  await a.click('#file-send');
  const got = await until('B receives the file', async () => (await b.evaluate(() => window.sb.received))[0], 30000);
  check(got.size === file.length && got.sha256 === sha, '1 MiB file arrives with the same SHA-256', `${got.size} bytes, ${got.sha256}`);
  check((await b.evaluate(() => document.getElementById('recv-progress').value)) === file.length, 'the receive progress bar is full');

  // A leaves: B gets bye, closes its connection, and can take a new call.
  const aId = await a.evaluate(() => window.sb.id);
  await a.click('#hangup');
  await until('B gets bye from A', () => b.evaluate((id) => window.sb.messages.some((m) => m.type === 'bye' && m.id === id), aId));
  check(await b.evaluate(() => window.sb.pc === null), 'B closed its RTCPeerConnection');
  await c.click('#join');
  await until('C joins the room A left', async () => (await types(c)).includes('joined'));
  await until('B decodes the new caller C', () => decodes(b));
  await until('C decodes B', () => decodes(c));
  check(true, 'the remaining page took a new call');

  // Snapshot and recording, as the buttons do them.
  await b.click('#snapshot');
  await until('a snapshot download link appears', () => b.evaluate(() => !!document.querySelector('#downloads a.snapshot')));
  await b.click('#record');
  await sleep(2500);
  await b.click('#record');
  const rec = await until('a recording download link appears', () => b.evaluate(() => document.querySelector('#downloads a.recording')?.textContent));
  check(!/\(0 KiB\)/.test(rec), 'the recording is not empty', rec);
  await closeAll();
}

async function voiceCallAndScreenShare() {
  const room = `voice-${randomBytes(4).toString('hex')}`;
  const a = await open(`room=${room}&name=Ada&media=audio&autojoin=1`, 'A');
  const b = await open(`room=${room}&name=Bob&media=audio&autojoin=1`, 'B');
  await until('voice call: B receives A\'s audio', async () => (await media(b)).audio > 0);
  await sleep(1000);
  check((await media(b)).video === 0, '5. a voice-only call carries no video', JSON.stringify(await media(b)));
  await a.click('#share');
  const m = await until('B decodes A\'s shared screen', async () => {
    const x = await media(b);
    return x.video > 0 ? x : null;
  });
  check(true, 'screen sharing (getDisplayMedia) reaches the other side, renegotiated into the voice call', JSON.stringify(m));
  await a.click('#mute');
  check(await a.evaluate(() => window.sb.local.getAudioTracks().every((t) => !t.enabled)), 'mute disables the microphone track');
  await a.click('#mute');
  check(await a.evaluate(() => window.sb.local.getAudioTracks().every((t) => t.enabled)), 'unmute enables it again');
  await closeAll();
}

/** Inbound streams on the page's connection: decoding video streams, audio streams with packets, live video receivers. */
const sfuMedia = (page) =>
  page.evaluate(async () => {
    const pc = window.sb.pc;
    if (!pc) return { videos: 0, audios: 0, live: 0 };
    const stats = await pc.getStats();
    let videos = 0;
    let audios = 0;
    stats.forEach((r) => {
      if (r.type === 'inbound-rtp' && r.kind === 'video' && r.framesDecoded > 0) videos += 1;
      if (r.type === 'inbound-rtp' && r.kind === 'audio' && r.packetsReceived > 0) audios += 1;
    });
    const live = pc.getTransceivers().filter((t) => t.receiver.track.kind === 'video' && !['stopped', 'inactive', 'sendonly'].includes(t.currentDirection) && t.receiver.track.readyState === 'live').length;
    return { videos, audios, live };
  });

/** Waits until every page decodes `n` other participants' video and audio; returns the counts. */
async function allDecode(list, n, what) {
  for (const p of list) {
    const m = await until(`${what}: ${p.label} decodes ${n} videos and ${n} audios`, async () => {
      const x = await sfuMedia(p);
      return x.videos >= n && x.audios >= n ? x : null;
    }, 30000);
    check(true, `${what}: ${p.label}`, JSON.stringify(m));
  }
}

async function sfuRoom() {
  const room = `sfu-${randomBytes(4).toString('hex')}`;
  const a = await open(`room=${room}&name=Ada&mode=sfu&autojoin=1`, 'A');
  const b = await open(`room=${room}&name=Bob&mode=sfu&autojoin=1`, 'B');
  const c = await open(`room=${room}&name=Cy&mode=sfu&autojoin=1`, 'C');
  await allDecode([a, b, c], 2, '6. SFU room of three');
  const d = await open(`room=${room}&name=Dee&mode=sfu&autojoin=1`, 'D');
  await allDecode([d], 3, 'a late joiner receives the three already there');
  await allDecode([a, b, c], 3, 'and the three receive the late joiner');
  await c.screenshot({ path: `${outDir}/sfu.png` });
  // The data channel goes through the server to everyone else.
  const file = randomBytes(64 * 1024);
  const sha = createHash('sha256').update(file).digest('hex');
  await until('A\'s data channel to the SFU is open', () => a.evaluate(() => !document.getElementById('file-send').disabled));
  await a.setInputFiles('#file-input', { name: 'room.bin', mimeType: 'application/octet-stream', buffer: file });
  await a.click('#file-send');
  for (const p of [b, c, d]) {
    const got = await until(`${p.label} receives A's data channel file through the SFU`, async () => (await p.evaluate(() => window.sb.received))[0]);
    check(got.sha256 === sha, `data channel through the SFU reaches ${p.label}`, got.sha256);
  }
  const stats = await serverStats();
  const r = stats.sfu_rooms.find((x) => x.room === room);
  check(r && r.participants.length === 4 && r.participants.every((p) => p.packets_in > 0 && p.packets_out > 0 && p.tracks_published === 2 && p.tracks_subscribed === 6), '/stats shows the room, its participants, tracks and packets', JSON.stringify(r && r.participants.map((p) => [p.packets_in, p.packets_out, p.tracks_published, p.tracks_subscribed])));
  // One leaves: its tracks end on the others, and its tile goes.
  const cId = await c.evaluate(() => window.sb.id);
  const tileOf = (p) => p.evaluate((id) => !!document.querySelector(`#grid figure[data-peer="${id}"]`), cId);
  for (const p of [a, b, d]) check(await tileOf(p), `${p.label} shows C's tile`);
  await c.click('#hangup');
  for (const p of [a, b, d]) {
    const m = await until(`${p.label}: C's video ends`, async () => {
      const x = await sfuMedia(p);
      return x.live === 2 ? x : null;
    });
    check(true, `a leaver's tracks end on ${p.label}`, JSON.stringify(m));
    check(!(await tileOf(p)), `C's tile is gone on ${p.label}`);
  }
  await closeAll();
}

/**
 * Two SFU rooms at once: with two or more workers they are placed on different workers (each worker has its own
 * media port, which its candidate names), each room whole on one; both decode.
 */
async function twoRoomsOnTwoWorkers() {
  const workers = (await serverStats()).workers.length;
  check(workers >= 2, `the server runs ${workers} workers (this check needs two)`);
  const x = `sfu-x-${randomBytes(4).toString('hex')}`;
  const y = `sfu-y-${randomBytes(4).toString('hex')}`;
  // The first page of each room places it: the second room goes to the worker the first did not load.
  const x1 = await open(`room=${x}&name=Xa&mode=sfu&autojoin=1`, 'X1');
  await until('X1 joined', async () => (await types(x1)).includes('joined'));
  const y1 = await open(`room=${y}&name=Ya&mode=sfu&autojoin=1`, 'Y1');
  const x2 = await open(`room=${x}&name=Xb&mode=sfu&autojoin=1`, 'X2');
  const y2 = await open(`room=${y}&name=Yb&mode=sfu&autojoin=1`, 'Y2');
  await allDecode([x1, x2, y1, y2], 1, '9. two SFU rooms at once, each on its own worker');
  const stats = await serverStats();
  const entries = (room) => stats.sfu_rooms.filter((r) => r.room === room);
  for (const room of [x, y]) {
    const e = entries(room);
    check(e.length === 1 && e[0].participants.length === 2, `room ${room} is whole on one worker`, JSON.stringify(e.map((r) => r.participants.length)));
  }
  const hosting = stats.workers.filter((w) => w.sfu_rooms > 0);
  check(hosting.length === 2 && hosting.every((w) => w.sfu_rooms === 1 && w.sfu_participants === 2), 'the two rooms are on two workers, counted in /stats', JSON.stringify(stats.workers));
  await closeAll();
}

/**
 * What the page receives from each other participant, by peer id (its tile): frames decoded of its video and
 * packets received of its audio, each summed over that peer's inbound tracks (so an ended track of a peer who
 * left, whose tile is gone, counts for nobody).
 */
const perPeer = (page) =>
  page.evaluate(async () => {
    const pc = window.sb.pc;
    const out = {};
    if (!pc) return out;
    const owner = {};
    document.querySelectorAll('#grid figure[data-peer]').forEach((fig) => {
      const v = fig.querySelector('video');
      for (const t of v && v.srcObject ? v.srcObject.getTracks() : []) owner[t.id] = fig.dataset.peer;
    });
    const stats = await pc.getStats();
    stats.forEach((r) => {
      if (r.type !== 'inbound-rtp' || !owner[r.trackIdentifier]) return;
      const m = (out[owner[r.trackIdentifier]] ||= { video: 0, audio: 0 });
      if (r.kind === 'video') m.video += r.framesDecoded || 0;
      if (r.kind === 'audio') m.audio += r.packetsReceived || 0;
    });
    return out;
  });

/** The peers (ids) whose tile on the page is marked paused with its "video paused (bandwidth)" note shown. */
const pausedTiles = (page) =>
  page.evaluate(() =>
    [...document.querySelectorAll('#grid figure.paused')]
      .filter((fig) => {
        const note = fig.querySelector('.paused-note');
        return note && getComputedStyle(note).display !== 'none' && note.textContent.includes('video paused');
      })
      .map((fig) => fig.dataset.peer)
      .sort(),
  );

/** Waits until `page` decodes video frames and receives audio packets from each of the peers `ids`. */
async function decodesEach(page, ids, what, timeoutMs = 60000) {
  const m = await until(`${what}: ${page.label} decodes the video and receives the audio of ${ids.length} others`, async () => {
    const x = await perPeer(page);
    return ids.every((id) => x[id] && x[id].video > 0 && x[id].audio > 0) ? x : null;
  }, timeoutMs);
  return ids.map((id) => `${m[id].video}f/${m[id].audio}p`).join(' ');
}

async function sixPagesAndALimitedOne() {
  const room = `six-${randomBytes(4).toString('hex')}`;
  const names = ['Ada', 'Bob', 'Cy', 'Dee', 'Eve', 'Fay'];
  const six = [];
  for (const [i, name] of names.entries()) six.push(await open(`room=${room}&name=${name}&mode=sfu&autojoin=1`, 'ABCDEF'[i]));
  const ids = [];
  for (const p of six) ids.push(await until(`${p.label} joined`, () => p.evaluate(() => window.sb.id)));
  for (const [i, p] of six.entries()) {
    const got = await decodesEach(p, ids.filter((_, j) => j !== i), '8. SFU room of six');
    check(true, `8. SFU room of six: ${p.label} decodes the 5 others' videos and receives their audio`, got);
  }
  // F leaves (its page closes); a page that asks the server for at most LIMIT kbit/s takes its place. The five
  // others' audio alone (Opus, 10 to 40 kbit/s each) needs more than that, and audio goes first and always: no
  // video fits, so the server pauses all five for it. (With a limit that fits a video or two, which ones fit
  // changes with the publishers' rates from one second to the next: not a stable check.)
  const LIMIT = 32;
  const f = six.pop();
  ids.pop();
  const five = six;
  pages.splice(pages.indexOf(f), 1);
  await f.context().close();
  const lim = await open(`room=${room}&name=Lim&mode=sfu&autojoin=1&maxkbps=${LIMIT}`, 'L');
  const limId = await until('L joined', () => lim.evaluate(() => window.sb.id));
  const heard = await until('L receives audio from each of the five', async () => {
    const x = await perPeer(lim);
    return ids.every((id) => x[id] && x[id].audio > 0) ? x : null;
  }, 30000);
  check(true, `a page limited to ${LIMIT} kbit/s receives the five others' audio`, ids.map((id) => `${heard[id].video}f/${heard[id].audio}p`).join(' '));
  for (const p of five) await decodesEach(p, [limId], 'its own video is not limited', 30000);
  check(true, 'the five others decode the limited page\'s video and audio');
  const paused = await until('L shows the five videos paused ("video paused (bandwidth)")', async () => {
    const t = await pausedTiles(lim);
    return t.length === 5 ? t : null;
  }, 20000);
  check(JSON.stringify(paused) === JSON.stringify([...ids].sort()), 'the limited page shows each of the five tiles paused, its note visible', paused.join(' '));
  // What the server says: L's five publishers paused (as L's tiles show), none paused for the five others.
  const r = await until('/stats lists the five publishers as paused for L', async () => {
    const x = (await serverStats()).sfu_rooms.find((y) => y.room === room);
    const l = x && x.participants.find((y) => y.id === limId);
    return l && JSON.stringify([...l.paused].sort()) === JSON.stringify(paused) ? x : null;
  }, 10000);
  const name = (id) => (id === limId ? 'L' : 'ABCDE'[ids.indexOf(id)]);
  const summary = r.participants.map((x) => `${name(x.id)}: paused [${x.paused.map(name).join('')}]`).join(', ');
  check(r.participants.length === 6 && r.participants.every((x) => x.id === limId || x.paused.length === 0), '/stats: the five paused for L, nothing paused for the five unlimited pages', summary);
  // While limited, L's audio keeps coming from everyone, the paused videos decode nothing, and none resumes.
  const before = await perPeer(lim);
  await sleep(3000);
  const after = await perPeer(lim);
  check(ids.every((id) => after[id].audio > before[id].audio + 50), 'L keeps receiving audio from each of the five (packets in 3 s)', ids.map((id) => after[id].audio - before[id].audio).join(' '));
  check(ids.every((id) => after[id].video === before[id].video), 'the paused videos decode no frame on L (frames in 3 s)', ids.map((id) => after[id].video - before[id].video).join(' '));
  const told = await lim.evaluate(() => window.sb.messages.filter((m) => m.type === 'paused').map((m) => m.paused));
  check(told.length === 5 && told.every((x) => x), 'L was told "paused" once per video and never "resumed"', JSON.stringify(told));
  await closeAll();
}

/** The subscriber's inbound video from one publisher: frames decoded and frame width. */
const inboundVideo = (page) =>
  page.evaluate(async () => {
    if (!window.sb.pc) return null;
    const stats = await window.sb.pc.getStats();
    let v = null;
    stats.forEach((r) => {
      if (r.type === 'inbound-rtp' && r.kind === 'video') v = { frames: r.framesDecoded || 0, width: r.frameWidth || 0 };
    });
    return v;
  });

async function simulcast() {
  const room = `simulcast-${randomBytes(4).toString('hex')}`;
  const pub = await open(`room=${room}&name=Pub&mode=sfu&simulcast=1&media=video&autojoin=1`, 'P');
  await until('the publisher joined', async () => (await types(pub)).includes('joined'));
  const sub = await open(`room=${room}&name=Sub&mode=sfu&media=audio&autojoin=1`, 'S');
  await until('the subscriber decodes the publisher', async () => ((await inboundVideo(sub)) || { frames: 0 }).frames > 0, 30000);
  const pubId = await pub.evaluate(() => window.sb.id);
  const r = await until('the server sees three layers', async () => {
    const st = await serverStats();
    const room_ = st.sfu_rooms.find((x) => x.room === room);
    const s = room_ && room_.participants.find((p) => p.layers.length === 1);
    return s ? s.layers[0] : null;
  });
  check(r.startsWith(`${pubId}:`), '7. a page publishes simulcast and the subscriber gets one layer', r);
  const widths = {};
  for (const rid of ['h', 'l', 'm']) {
    await sub.selectOption(`#grid figure[data-peer="${pubId}"] select.layer`, rid);
    const st = await until(`the server forwards layer ${rid}`, async () => {
      const x = await serverStats();
      const s = x.sfu_rooms.find((y) => y.room === room).participants.find((p) => p.layers.length === 1);
      return s.layers[0] === `${pubId}:${rid}` ? s.layers[0] : null;
    });
    await sleep(1500);
    const before = await inboundVideo(sub);
    // Frames go on (a stall right after a switch recovers at the next keyframe, which a PLI asks for).
    const after = await until(`frames after switching to ${rid}`, async () => {
      await sleep(500);
      const x = await inboundVideo(sub);
      return x.frames > before.frames + 10 ? x : null;
    }, 10000);
    widths[rid] = after.width;
    check(after.frames > before.frames, `frames keep being decoded after switching to ${rid}`, `${st}: ${before.frames} -> ${after.frames} frames, ${after.width} px wide`);
  }
  check(widths.h > widths.m && widths.m > widths.l, 'each layer has its own resolution (high > medium > low)', JSON.stringify(widths));
  await closeAll();
}

/**
 * 12. Active speaker and rooms that last: of three pages only A's (fake) microphone makes sound, B and C mute
 * theirs; every page is told A speaks and shows A's tile first (A: its own video outlined). Then C leaves and D
 * joins: A's connection keeps its number of transceivers (C's m-lines carry D's tracks) and A shows D's video in
 * D's tile.
 */
async function speakerAndReusedMLines() {
  const room = `talk-${randomBytes(4).toString('hex')}`;
  const a = await open(`room=${room}&name=Ada&mode=sfu&autojoin=1`, 'A');
  const b = await open(`room=${room}&name=Bob&mode=sfu&autojoin=1`, 'B');
  const c = await open(`room=${room}&name=Cy&mode=sfu&autojoin=1`, 'C');
  for (const p of [b, c]) {
    await until(`${p.label} has its microphone`, () => p.evaluate(() => !!window.sb.local && window.sb.local.getAudioTracks().length > 0));
    await p.click('#mute');
  }
  await allDecode([a, b, c], 2, '12. SFU room of three, one speaking');
  const aId = await a.evaluate(() => window.sb.id);
  // B and C may have been heard before their mute (their beeps start with the call); from then on it is A.
  const speakers = (p) => p.evaluate(() => window.sb.messages.filter((m) => m.type === 'speaker').map((m) => m.peer));
  for (const p of [a, b, c]) await until(`${p.label} is told A speaks`, async () => (await speakers(p)).at(-1) === aId);
  const told = await Promise.all([a, b, c].map(speakers));
  await sleep(3000);
  for (const [i, p] of [a, b, c].entries()) {
    const now = await speakers(p);
    check(now.length === told[i].length && now.at(-1) === aId, `${p.label} is told A speaks, and it stays A for 3 s`, JSON.stringify(now.map((x) => (x === aId ? 'A' : x))));
  }
  for (const p of [b, c]) {
    const first = await p.evaluate(() => {
      const figs = [...document.querySelectorAll('#grid figure')].filter((f) => getComputedStyle(f).display !== 'none');
      figs.sort((x, y) => Number(getComputedStyle(x).order) - Number(getComputedStyle(y).order));
      return figs[0] && { peer: figs[0].dataset.peer, speaking: figs[0].classList.contains('speaking') };
    });
    check(first && first.peer === aId && first.speaking, `${p.label} shows A's tile first, highlighted`, JSON.stringify(first));
  }
  check(await a.evaluate(() => document.getElementById('local-video').classList.contains('speaking')), 'A highlights its own video');
  await a.screenshot({ path: `${outDir}/speaker-a.png` });
  await b.screenshot({ path: `${outDir}/speaker-b.png` });
  // Rooms that last: C leaves, D joins; A's m-lines are reused.
  const transceivers = () => a.evaluate(() => window.sb.pc.getTransceivers().length);
  const before = await transceivers();
  await c.click('#hangup');
  await until('A sees C\'s video end', async () => (await sfuMedia(a)).live === 1);
  const d = await open(`room=${room}&name=Dee&mode=sfu&autojoin=1`, 'D');
  await until('D joined', async () => (await types(d)).includes('joined'));
  const dId = await d.evaluate(() => window.sb.id);
  const shown = await until('A shows D\'s video in D\'s tile', () => a.evaluate((id) => {
    const v = document.querySelector(`#grid figure[data-peer="${id}"] video`);
    return v && v.videoWidth > 0 && v.srcObject.getAudioTracks().length === 1 ? { width: v.videoWidth, time: v.currentTime } : null;
  }, dId), 30000);
  await sleep(1000);
  const playing = await a.evaluate((id) => document.querySelector(`#grid figure[data-peer="${id}"] video`).currentTime, dId);
  check(playing > shown.time, 'D\'s video plays in its tile on A', `${shown.width} px, t ${shown.time.toFixed(2)} -> ${playing.toFixed(2)} s`);
  const after = await transceivers();
  check(after === before, 'A\'s connection reused C\'s m-lines for D (no new transceiver)', `${before} -> ${after} transceivers`);
  await closeAll();
}

/** The token the server takes for WHIP and WHEP (tests/tests/browser.rs starts it with --whip-token). */
const WHIP_TOKEN = 'browser-whip-token';
const npm = (file) => readFileSync(new URL(`./node_modules/whip-whep/${file}`, import.meta.url));

/**
 * Pages on another origin: a small web server of the test's own (node's http module, on another loopback port)
 * serves them and medooze's WHIP/WHEP client from npm (`whip-whep`), so their requests to Switchboard are
 * cross-origin and Chromium makes the CORS preflight a page on another site would.
 */
const foreign = { pages: {}, origin: null };
const foreignServer = createServer((req, res) => {
  const path = new URL(req.url, 'http://x').pathname.slice(1);
  if (path === 'whip.js' || path === 'whep.js') {
    res.writeHead(200, { 'Content-Type': 'text/javascript' }).end(npm(path));
  } else if (foreign.pages[path]) {
    res.writeHead(200, { 'Content-Type': 'text/html' }).end(`<!doctype html><video autoplay muted playsinline></video><script type="module">${foreign.pages[path]}</script>`);
  } else {
    res.writeHead(404).end();
  }
});
await new Promise((r) => foreignServer.listen(0, '127.0.0.1', r));
foreign.origin = `http://127.0.0.1:${foreignServer.address().port}`;

async function foreignPage(name, label, script) {
  foreign.pages[name] = script;
  const context = await browser.newContext({ viewport: { width: 700, height: 500 } });
  const page = await context.newPage();
  page.label = label;
  page.consoleLines = [];
  page.on('console', (m) => page.consoleLines.push(`${label}: ${m.text()}`));
  page.on('pageerror', (e) => page.consoleLines.push(`${label}: page error ${e.message}`));
  await page.goto(`${foreign.origin}/${name}`);
  await page.waitForFunction(() => typeof window.go === 'function');
  pages.push(page);
  return page;
}

/** A WHIP publisher page: the fake camera and microphone, sent with whip-whep's WHIPClient. */
const whipPage = (label) =>
  foreignPage('whip', label, `
    import { WHIPClient } from './whip.js';
    window.go = async (url, token) => {
      const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
      const pc = new RTCPeerConnection();
      for (const t of stream.getTracks()) pc.addTransceiver(t, { direction: 'sendonly' });
      window.whip = new WHIPClient();
      window.pc = pc;
      await window.whip.publish(pc, url, token);
      return window.whip.resourceURL.href;
    };`);

/** A WHEP player page: whip-whep's WHEPClient on a connection that receives audio and video. */
const whepPage = (label) =>
  foreignPage('whep', label, `
    import { WHEPClient } from './whep.js';
    window.go = async (url, token) => {
      const pc = new RTCPeerConnection();
      pc.addTransceiver('audio', { direction: 'recvonly' });
      pc.addTransceiver('video', { direction: 'recvonly' });
      const video = document.querySelector('video');
      video.srcObject = new MediaStream();
      pc.ontrack = (e) => video.srcObject.addTrack(e.track);
      window.whep = new WHEPClient();
      window.pc = pc;
      await window.whep.view(pc, url, token);
      return window.whep.resourceURL.href;
    };`);

/** Inbound media on a page whose connection is `window.pc` (the WHIP/WHEP pages). */
const pcMedia = (page) =>
  page.evaluate(async () => {
    let video = 0;
    let audio = 0;
    (await window.pc.getStats()).forEach((r) => {
      if (r.type === 'inbound-rtp' && r.kind === 'video') video = Math.max(video, r.framesDecoded || 0);
      if (r.type === 'inbound-rtp' && r.kind === 'audio') audio = Math.max(audio, r.packetsReceived || 0);
    });
    return { video, audio };
  });

/**
 * 13. WHIP and WHEP with a client library from npm (medooze's whip-whep, by the WHEP draft's author), on pages of
 * other origins: a WHIP publisher appears in an SFU room as a participant with a name and a browser decodes it; a
 * WHEP player pinned to the browser plays it; a wrong token gets 401; DELETE stops the forwarding; a publisher
 * whose page vanishes without DELETE is removed.
 */
async function whipAndWhep() {
  const room = `whip-${randomBytes(4).toString('hex')}`;
  const api = `http://127.0.0.1:${httpPort}`;
  const p = await whipPage('WHIP');
  const location = await p.evaluate(({ url, token }) => window.go(url, token), { url: `${api}/whip/${room}?name=Encoder`, token: WHIP_TOKEN });
  check(location.startsWith(`${api}/whip/${room}/`), '13. WHIP: the publisher page got 201 Created with a Location (cross-origin, CORS)', location);
  const b = await open(`room=${room}&name=Bob&mode=sfu&autojoin=1`, 'B');
  await allDecode([b], 1, 'a browser in the room decodes the WHIP publisher');
  const caption = await until('B shows a tile named Encoder', () => b.evaluate(() => [...document.querySelectorAll('#grid figcaption')].map((c) => c.textContent).find((t) => t.includes('Encoder'))));
  check(true, 'the WHIP publisher is a participant with a name', caption);
  const bId = await b.evaluate(() => window.sb.id);
  // WHEP, pinned to the browser.
  const v = await whepPage('WHEP');
  const whepLocation = await v.evaluate(({ url, token }) => window.go(url, token), { url: `${api}/whep/${room}?peer=${bId}`, token: WHIP_TOKEN });
  check(whepLocation.startsWith(`${api}/whep/${room}/`), 'WHEP: the player page got 201 Created with a Location', whepLocation);
  const played = await until('the WHEP player decodes the browser\'s video and receives its audio', async () => {
    const m = await pcMedia(v);
    return m.video > 10 && m.audio > 10 ? m : null;
  }, 30000);
  const t0 = await v.evaluate(() => document.querySelector('video').currentTime);
  await sleep(1000);
  const t1 = await v.evaluate(() => document.querySelector('video').currentTime);
  check(t1 > t0, 'WHEP: the player plays the room (a browser publishing)', `${JSON.stringify(played)}, t ${t0.toFixed(2)} -> ${t1.toFixed(2)} s`);
  await v.screenshot({ path: `${outDir}/whep-player.png` });
  // A wrong token: 401, readable cross-origin.
  const refused = await v.evaluate(async (url) => {
    const pc = new RTCPeerConnection();
    pc.addTransceiver('video', { direction: 'recvonly' });
    const offer = await pc.createOffer();
    const r = await fetch(url, { method: 'POST', body: offer.sdp, headers: { 'Content-Type': 'application/sdp', Authorization: 'Bearer wrong' } });
    return { status: r.status, auth: r.headers.get('www-authenticate') };
  }, `${api}/whep/${room}`);
  check(refused.status === 401 && /^Bearer/.test(refused.auth), 'a wrong token gets 401 with WWW-Authenticate: Bearer', JSON.stringify(refused));
  // DELETE: the WHIP publisher's tracks end on B.
  await p.evaluate(() => window.whip.stop());
  await until('B sees the WHIP publisher\'s video end', async () => (await sfuMedia(b)).live === 0);
  const afterDelete = (await serverStats()).whip;
  check(afterDelete.whip_sessions === 0 && afterDelete.deleted >= 1, 'DELETE ends the session and its forwarding', JSON.stringify(afterDelete));
  // A publisher that vanishes without DELETE.
  const q = await whipPage('WHIP2');
  await q.evaluate(({ url, token }) => window.go(url, token), { url: `${api}/whip/${room}?name=Vanishing`, token: WHIP_TOKEN });
  await until('B decodes the second WHIP publisher', async () => (await sfuMedia(b)).videos >= 2 || (await sfuMedia(b)).live >= 1);
  const before = (await serverStats()).sfu.participants;
  await q.context().close();
  pages.splice(pages.indexOf(q), 1);
  const t = Date.now();
  const gone = await until('the vanished publisher is removed', async () => {
    const st = await serverStats();
    return st.whip.whip_sessions === 0 && st.sfu.participants === before - 1 ? st : null;
  }, 30000);
  check(true, 'a WHIP publisher that vanished without DELETE is removed', `after ${((Date.now() - t) / 1000).toFixed(1)} s; media_clients_lost ${gone.sfu.media_clients_lost}`);
  await closeAll();
}

/** ffprobe's view of a file: streams (codec, start, frames decoded) and the duration. */
function probe(path) {
  const out = execFileSync('ffprobe', ['-v', 'error', '-count_frames', '-show_entries', 'stream=codec_name,start_time,nb_read_frames:format=duration', '-of', 'json', path]);
  const j = JSON.parse(out);
  const s = j.streams[0] || {};
  return { codec: s.codec_name, start: Number(s.start_time), frames: Number(s.nb_read_frames || 0), duration: Number(j.format.duration) };
}

/** Two SFU pages in a room: started, and both decoding each other. */
async function sfuPair(room) {
  const a = await open(`room=${room}&name=Ada&mode=sfu&autojoin=1`, 'A');
  const b = await open(`room=${room}&name=Bob&mode=sfu&autojoin=1`, 'B');
  await allDecode([a, b], 1, `SFU room ${room}`);
  return [a, b];
}

/**
 * 14. Recording on the server: A presses "Record on server"; both pages show it; after 20 s A stops it. /recordings
 * lists a file per track (4), each downloaded and read by ffprobe (Debian's ffmpeg): frames decode, each duration is
 * within 5% of the recorded time, and each participant's audio and video start within 100 ms of each other.
 */
async function serverRecording() {
  const room = `rec-${randomBytes(4).toString('hex')}`;
  const [a, b] = await sfuPair(room);
  await a.click('#server-record');
  const noted = (p) => p.evaluate(() => !document.getElementById('recording-note').hidden);
  await until('both pages show the room is recorded', async () => (await noted(a)) && (await noted(b)));
  const started = Date.now();
  await sleep(20000);
  const stopped = Date.now();
  await a.click('#server-record');
  await until('both pages show the recording stopped', async () => !(await noted(a)) && !(await noted(b)));
  const seconds = (stopped - started) / 1000;
  const q = `token=${WHIP_TOKEN}`;
  const list = await (await fetch(`${base}recordings.json?${q}`)).json();
  const files = list.filter((f) => f.room === room);
  check(files.length === 4, '14. /recordings lists one file per published track', files.map((f) => `${f.file} ${f.bytes} B`).join(', '));
  const html = await (await fetch(`${base}recordings?${q}`)).text();
  check(files.every((f) => html.includes(`href="${f.url}?${q}"`)), 'the /recordings page links each file');
  const probed = {};
  for (const f of files) {
    const bytes = Buffer.from(await (await fetch(`${base}${f.url.slice(1)}?${q}`)).arrayBuffer());
    check(bytes.length === f.bytes, `downloaded ${f.file}`, `${bytes.length} bytes`);
    const path = `${outDir}/${f.file}`;
    writeFileSync(path, bytes);
    const pr = probe(path);
    probed[f.file] = pr;
    const off = Math.abs(pr.duration - seconds) / seconds;
    check(pr.frames > 0 && off <= 0.05, `ffprobe reads ${f.file}`, `${pr.codec}, ${pr.frames} frames decoded, ${pr.duration.toFixed(2)} s for ${seconds.toFixed(2)} s recorded (${(off * 100).toFixed(1)}% off), start ${pr.start.toFixed(3)} s`);
  }
  for (const who of new Set(files.map((f) => f.file.replace(/^.*?-([0-9a-f]{16})-(audio|video)-.*$/, '$1')))) {
    const mine = Object.entries(probed).filter(([name]) => name.includes(`-${who}-`));
    const audio = mine.find(([n]) => n.includes('-audio-'));
    const video = mine.find(([n]) => n.includes('-video-'));
    const gap = Math.abs(audio[1].start - video[1].start);
    check(gap <= 0.1, `participant ${who}: audio and video start together`, `audio ${audio[1].start.toFixed(3)} s, video ${video[1].start.toFixed(3)} s (${(gap * 1000).toFixed(0)} ms apart)`);
  }
  await closeAll();
}

/**
 * 15 (last: the server does not survive it). A recording in progress when the server is killed with SIGKILL: the
 * files in the recording directory (nothing closed them) are still read by ffprobe, with frames.
 */
async function killedWhileRecording() {
  check(!!serverPid && !!recordDir, 'the server\'s pid and recording directory are given');
  const room = `kill-${randomBytes(4).toString('hex')}`;
  const [a] = await sfuPair(room);
  await a.click('#server-record');
  await until('A shows the room is recorded', () => a.evaluate(() => !document.getElementById('recording-note').hidden));
  const dir = `${recordDir}/${room}`;
  // Every track's file is open (a track's file opens at its first packet, which a busy machine may delay),
  // then a few seconds of media go into them before the kill.
  await until('a file per track in the recording directory', () => existsSync(dir) && readdirSync(dir).length === 4);
  await sleep(4000);
  process.kill(Number(serverPid), 'SIGKILL');
  await sleep(500);
  const files = readdirSync(dir);
  check(files.length === 4, '15. a server killed with SIGKILL mid-recording leaves a file per track', files.join(', '));
  for (const f of files) {
    const pr = probe(`${dir}/${f}`);
    check(pr.frames > 0, `ffprobe still reads ${f}`, `${pr.codec}, ${pr.frames} frames, ${Number.isNaN(pr.duration) ? '?' : pr.duration.toFixed(2)} s`);
  }
  await closeAll();
}

async function alone() {
  const room = `alone-${randomBytes(4).toString('hex')}`;
  const d = await open(`room=${room}&name=Dee&autojoin=1`, 'D');
  await until('D joined', async () => (await types(d)).includes('joined'));
  await sleep(4000);
  const m = await media(d);
  check(!(m.video > 0 && m.audio > 0), '4. negative control: one page alone decodes nothing', JSON.stringify(m));
  await closeAll();
}

let failed = false;
// CHECKS=name,name runs only those (while working on them); the test suite runs all.
const only = process.env.CHECKS ? process.env.CHECKS.split(',') : null;
try {
  for (const checks of [directCall, relayedCall, roomLife, voiceCallAndScreenShare, sfuRoom, simulcast, sixPagesAndALimitedOne, twoRoomsOnTwoWorkers, tlsCall, dashboardAndCallPanel, speakerAndReusedMLines, whipAndWhep, serverRecording, alone, killedWhileRecording]) {
    if (only && !only.includes(checks.name)) continue;
    const t0 = Date.now();
    await checks();
    console.log(`     (${checks.name}: ${((Date.now() - t0) / 1000).toFixed(1)} s)`);
  }
} catch (e) {
  failed = true;
  console.log(`error: ${e.stack || e}`);
  for (const p of pages) {
    try {
      const logText = await p.evaluate(() => [...document.querySelectorAll('#log li')].map((li) => li.textContent).join('\n'));
      const msgs = await p.evaluate(() => window.sb.messages.map((m) => m.type + (m.data ? ' ' + Object.keys(m.data).join(',') + (m.data.description ? ' ' + m.data.description.type : '') : '')));
      console.log(`--- ${p.label} log:\n${logText}\n--- ${p.label} messages: ${msgs.join(' | ')}`);
      writeFileSync(`${outDir}/failure-${p.label}.png`, await p.screenshot());
    } catch {}
    console.log(p.consoleLines.join('\n'));
  }
}
foreignServer.close();
await browser.close();
process.exit(failed ? 1 : 0);
