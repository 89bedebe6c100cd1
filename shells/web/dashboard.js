// The live dashboard: polls /stats once a second, keeps five minutes of rates, and draws them as SVG lines.
// No build step and no library: the page is served by the server itself.
'use strict';

const POINTS = 300;
const series = { relay: [], fwd: [], times: [] };
let last = null;
window.dashboard = { samples: 0, series };

const fmt = (n) => (n >= 1e9 ? `${(n / 1e9).toFixed(1)} G` : n >= 1e6 ? `${(n / 1e6).toFixed(1)} M` : n >= 1e3 ? `${(n / 1e3).toFixed(1)} k` : `${Math.round(n)}`);

function card(label, value) {
  const d = document.createElement('div');
  d.className = 'card';
  d.innerHTML = `<span></span><b></b>`;
  d.firstChild.textContent = label;
  d.lastChild.textContent = value;
  return d;
}

/** Draws `values` as a line scaled to its maximum, with the maximum written at the top. */
function draw(svg, values) {
  const w = 600, h = 160;
  const max = Math.max(1, ...values);
  // Drawn from the left: the first minute on a one-minute scale, then up to five minutes across the width.
  const slots = Math.min(POINTS, Math.max(60, values.length));
  const step = w / (slots - 1);
  const start = 0;
  const pts = values.map((v, i) => `${((start + i) * step).toFixed(1)},${(h - 4 - (v / max) * (h - 24)).toFixed(1)}`).join(' ');
  // The scale is written beside the chart: text inside a stretched SVG would be stretched too.
  svg.innerHTML = `<line x1="0" y1="20" x2="${w}" y2="20" stroke="#eee"/><line x1="0" y1="${h - 4}" x2="${w}" y2="${h - 4}" stroke="#bbb"/>` +
    `<polyline fill="none" stroke="#2a6fdb" stroke-width="2" vector-effect="non-scaling-stroke" points="${pts}"/>`;
  document.getElementById(`${svg.id}-max`).textContent = fmt(max);
}

function rows(tbody, list) {
  tbody.innerHTML = '';
  for (const cells of list) {
    const tr = document.createElement('tr');
    for (const c of cells) {
      const td = document.createElement('td');
      td.textContent = c;
      tr.appendChild(td);
    }
    tbody.appendChild(tr);
  }
}

async function tick() {
  let s;
  try {
    s = await (await fetch('/stats', { cache: 'no-store' })).json();
  } catch (e) {
    document.getElementById('status').textContent = `cannot read /stats: ${e}`;
    return;
  }
  const now = performance.now();
  if (last) {
    const dt = Math.max(0.001, (now - last.at) / 1000);
    const push = (arr, v) => { arr.push(Math.max(0, v)); if (arr.length > POINTS) arr.shift(); };
    push(series.relay, ((s.relayed_bytes - last.relayed_bytes) * 8) / dt);
    push(series.fwd, (s.sfu.forwarded_packets - last.forwarded) / dt);
    window.dashboard.samples += 1;
  }
  last = { at: now, relayed_bytes: s.relayed_bytes, forwarded: s.sfu.forwarded_packets };
  const relayNow = series.relay.at(-1) || 0;
  const fwdNow = series.fwd.at(-1) || 0;
  document.getElementById('relay-now').textContent = `${fmt(relayNow)}bit/s`;
  document.getElementById('fwd-now').textContent = `${fmt(fwdNow)} packets/s`;
  draw(document.getElementById('relay-chart'), series.relay);
  draw(document.getElementById('fwd-chart'), series.fwd);
  const cards = document.getElementById('cards');
  cards.replaceChildren(
    card('rooms', s.rooms), card('peers', s.peers), card('TURN allocations', s.allocations),
    card('SFU participants', s.sfu.participants), card('relayed packets', fmt(s.relayed_packets)),
    card('forwarded packets', fmt(s.sfu.forwarded_packets)), card('workers', s.workers.length),
    card('connections refused', (s.connections?.refused_total || 0) + (s.connections?.refused_per_ip || 0)),
  );
  rows(document.querySelector('#rooms tbody'), s.sfu_rooms.flatMap((r) => r.participants.map((p) =>
    [r.room, p.peer || p.id || '', p.packets_in, p.packets_out, p.tracks_published, p.tracks_subscribed])));
  rows(document.querySelector('#workers tbody'), s.workers.map((w) =>
    [w.worker, w.allocations, w.relayed_packets, w.sfu_rooms, w.sfu_participants, w.forwarded_packets]));
  document.getElementById('status').textContent = `updated ${new Date().toLocaleTimeString()}`;
}

tick();
setInterval(tick, 1000);
