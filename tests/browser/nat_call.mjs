// One side of a call between two network namespaces, each behind its own NAT: run by tests/tests/nat_namespaces.rs
// as `ip netns exec CLIENT_NS node nat_call.mjs BASE ROOM LABEL OUT_DIR`, one process (one Chromium) per side.
//
//   BASE     the server's web client, e.g. http://198.51.100.1:8080/ (a non-loopback http origin: Chromium is told
//            to treat it as secure, or getUserMedia is refused)
//   ROOM     the p2p (mesh) room both sides join: the browsers connect to each other, not to the SFU
//   LABEL    this side's name in the room and in the output
//   OUT_DIR  where to look for the file `stop` (the test makes it once both sides reported), and to put a screenshot
//            on failure
//
// Prints `ok ...` lines, then one line `RESULT {json}` with what the page decoded, its selected candidate pair
// (local and remote candidate types and addresses), the candidates it gathered and the server's relay counters, and
// keeps the call up until OUT_DIR/stop exists (at most 60 s), so the other side can finish too. Exits 1 on failure.
import { existsSync, writeFileSync } from 'node:fs';
import { chromium } from 'playwright-core';

const [base, room, label, outDir] = process.argv.slice(2);
if (!base || !room || !label || !outDir) {
  console.error('usage: nat_call.mjs BASE ROOM LABEL OUT_DIR');
  process.exit(2);
}
const origin = new URL(base).origin;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const t0 = Date.now();
const elapsed = () => `${((Date.now() - t0) / 1000).toFixed(1)} s`;

async function until(what, fn, timeoutMs) {
  const end = Date.now() + timeoutMs;
  let last;
  while (Date.now() < end) {
    last = await fn();
    if (last) return last;
    await sleep(250);
  }
  throw new Error(`${label}: ${what}: not within ${timeoutMs} ms (last: ${JSON.stringify(last)})`);
}

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: [
    '--no-sandbox',
    '--use-fake-ui-for-media-stream',
    '--use-fake-device-for-media-stream',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--autoplay-policy=no-user-gesture-required',
    // The server is at a "public" address of the test's own namespaces, served over plain http.
    `--unsafely-treat-insecure-origin-as-secure=${origin}`,
  ],
});

let page;
let failed = false;
try {
  const context = await browser.newContext({ viewport: { width: 1000, height: 700 } });
  page = await context.newPage();
  page.consoleLines = [];
  page.on('console', (m) => page.consoleLines.push(`${label}: ${m.text()}`));
  page.on('pageerror', (e) => page.consoleLines.push(`${label}: page error ${e.message}`));
  await page.goto(`${base}?room=${encodeURIComponent(room)}&name=${encodeURIComponent(label)}&autojoin=1`);
  check(await page.evaluate(() => window.isSecureContext && !!navigator.mediaDevices), 'the page is a secure context with mediaDevices');

  const media = await until('decodes the other side (video frames and audio packets)', () =>
    page.evaluate(async () => {
      const pc = window.sb.pc;
      if (!pc) return null;
      let video = 0;
      let audio = 0;
      (await pc.getStats()).forEach((r) => {
        if (r.type === 'inbound-rtp' && r.kind === 'video') video = Math.max(video, r.framesDecoded || 0);
        if (r.type === 'inbound-rtp' && r.kind === 'audio') audio = Math.max(audio, r.packetsReceived || 0);
      });
      return video > 0 && audio > 0 ? { video, audio } : null;
    }), 45000);
  check(true, `decodes the other side after ${elapsed()}`, JSON.stringify(media));
  // Let ICE settle on its final pair (nomination may still switch right after the first media).
  await sleep(1500);
  const report = await until('a selected candidate pair that succeeded', () =>
    page.evaluate(async () => {
      const stats = await window.sb.pc.getStats();
      let pair = null;
      const candidates = [];
      stats.forEach((r) => {
        if (r.type === 'transport' && r.selectedCandidatePairId) pair = stats.get(r.selectedCandidatePairId);
        if (r.type === 'local-candidate') candidates.push(`${r.candidateType} ${r.protocol} ${r.address}:${r.port}${r.url ? ` (${r.url})` : ''}`);
      });
      if (!pair || pair.state !== 'succeeded') return null;
      const c = (id) => {
        const x = stats.get(id);
        return { type: x.candidateType, protocol: x.protocol, address: x.address, port: x.port, url: x.url, relayProtocol: x.relayProtocol };
      };
      let video = 0;
      stats.forEach((r) => {
        if (r.type === 'inbound-rtp' && r.kind === 'video') video = Math.max(video, r.framesDecoded || 0);
      });
      return { pair: { state: pair.state, nominated: pair.nominated, local: c(pair.localCandidateId), remote: c(pair.remoteCandidateId) }, framesDecoded: video, candidates };
    }), 10000);
  const server = await (await fetch(`${base}stats`)).json();
  report.server = { allocations: server.allocations, relayed_bytes: server.relayed_bytes };
  report.label = label;
  console.log(`RESULT ${JSON.stringify(report)}`);
  // Keep the call up until the test has both sides' results.
  const end = Date.now() + 60000;
  while (!existsSync(`${outDir}/stop`) && Date.now() < end) await sleep(100);
} catch (e) {
  failed = true;
  console.log(`error: ${e.stack || e}`);
  if (page) {
    try {
      const logText = await page.evaluate(() => [...document.querySelectorAll('#log li')].map((li) => li.textContent).join('\n'));
      const msgs = await page.evaluate(() => window.sb.messages.map((m) => m.type));
      console.log(`--- ${label} log:\n${logText}\n--- ${label} messages: ${msgs.join(' | ')}`);
      writeFileSync(`${outDir}/failure-${label}.png`, await page.screenshot());
    } catch {}
    console.log(page.consoleLines.join('\n'));
  }
}
await browser.close();
process.exit(failed ? 1 : 0);

function check(ok, what, detail = '') {
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${label}: ${what}${detail ? `: ${detail}` : ''}`);
  if (!ok) throw new Error(`${what} ${detail}`);
}
