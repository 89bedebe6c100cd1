// Switchboard's web client: join a room, call the other person in it (video or voice), share the screen,
// chat, send files over an RTCDataChannel, take a snapshot, record the call. Plain JS, no build step.
//
// Signaling is the JSON protocol of the server's /ws (see the core's signal::protocol). In a p2p room the two
// peers exchange SDP and ICE candidates inside `message` envelopes; the connection uses the "perfect
// negotiation" pattern, so renegotiation (screen sharing in a voice call) needs no extra protocol.
//
// In an sfu room each page has one RTCPeerConnection, to the server: it offers its camera and microphone, the
// server answers, and the server sends its own offers whenever the set of other participants' tracks changes;
// each remote stream (its id is the publisher's peer id) gets a tile in the grid.
//
// With "simulcast" ticked, the camera is sent as three layers (rids l, m, h: quarter, half and full size); each
// tile's selector asks the server for a layer of that participant (or "auto": the server picks by bandwidth).
// When our bandwidth does not carry a participant's video, the server pauses it (`paused` message) and its tile
// says "video paused (bandwidth)" until it resumes. ?maxkbps=N asks the server to send this page at most N kbit/s
// (a data saver; the server degrades layers, then pauses videos, to fit).
//
// URL parameters: ?room=NAME&name=NAME&media=video|audio&mode=p2p|sfu&simulcast=1&relay=1&autojoin=1&maxkbps=N
// &turn=udp|tcp|tls (use only that TURN transport; with relay=1 the call goes through it)
'use strict';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const CHUNK = 16 * 1024;

const state = {
  ws: null,
  id: null,
  room: null,
  iceServers: [],
  remoteId: null,
  remoteName: '',
  polite: false,
  pc: null,
  dc: null,
  local: null, // MediaStream from getUserMedia
  screen: null, // MediaStream from getDisplayMedia
  remote: null, // MediaStream of the other side
  makingOffer: false,
  ignoreOffer: false,
  messages: [], // every server message, for tests and for the log
  recorder: null,
  incoming: null, // file being received: {name, size, type, chunks, got}
  received: [], // [{name, size, sha256}]
  mode: 'p2p',
  names: {}, // peer id -> name (sfu rooms)
  pausedPeers: new Set(), // peer ids whose video the server paused for us (sfu rooms, bandwidth)
  sfuQueue: Promise.resolve(), // sfu signaling handled in order
};
// For tests and the curious: the live state.
window.sb = state;

function log(text) {
  const li = document.createElement('li');
  li.textContent = `${new Date().toLocaleTimeString()} ${text}`;
  $('log').append(li);
  li.scrollIntoView({ block: 'nearest' });
}

function status(text) {
  $('status').textContent = text;
}

function send(msg) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(msg));
}

function setInCall(joined) {
  $('join').disabled = joined;
  $('hangup').disabled = !joined;
  for (const id of ['room', 'name', 'media', 'mode', 'simulcast', 'relay']) $(id).disabled = joined;
  for (const id of ['chat-input', 'chat-send', 'mute', 'camera', 'share']) $(id).disabled = !joined;
  $('server-record').disabled = !joined || state.mode !== 'sfu';
  if (!joined) showRecording(false);
  updatePeerControls();
}

function updatePeerControls() {
  const open = state.dc && state.dc.readyState === 'open';
  $('file-input').disabled = !open;
  $('file-send').disabled = !open;
  const hasRemote = !!state.remote && state.remote.getTracks().length > 0;
  $('snapshot').disabled = !hasRemote;
  $('record').disabled = !hasRemote;
}

// ---- joining and leaving -------------------------------------------------------------------------------------

async function join() {
  const room = $('room').value.trim();
  if (!room) return;
  const wantVideo = $('media').value === 'video';
  // Browsers send three simulcast layers only from about 960x540 up.
  const video = wantVideo && $('simulcast').checked ? { width: 960, height: 540 } : wantVideo;
  try {
    state.local = await navigator.mediaDevices.getUserMedia({ audio: true, video });
  } catch (e) {
    status(`Cannot use the camera or microphone: ${e.message}`);
    return;
  }
  $('local-video').srcObject = state.local;
  const ws = new WebSocket(`${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`);
  state.ws = ws;
  state.mode = $('mode').value;
  ws.onopen = () => send({ type: 'join', room, name: $('name').value.trim() || undefined, mode: state.mode });
  ws.onmessage = (ev) => onServerMessage(JSON.parse(ev.data));
  ws.onclose = () => {
    if (state.ws === ws) {
      log('connection to the server closed');
      leave(false);
    }
  };
  setInCall(true);
  status(`Joining ${room}…`);
}

function leave(tellServer = true) {
  if (tellServer) send({ type: 'leave' });
  closePeer();
  if (state.ws) {
    const ws = state.ws;
    state.ws = null;
    ws.close();
  }
  for (const s of [state.local, state.screen]) if (s) s.getTracks().forEach((t) => t.stop());
  state.local = state.screen = null;
  $('local-video').srcObject = null;
  state.id = state.room = null;
  $('grid').replaceChildren();
  $('grid').hidden = true;
  $('remote-video').closest('figure').hidden = false;
  state.names = {};
  state.speaker = undefined;
  state.pausedPeers.clear();
  setInCall(false);
  status('Not connected.');
}

function onServerMessage(msg) {
  state.messages.push(msg);
  switch (msg.type) {
    case 'joined':
      state.id = msg.id;
      state.room = msg.room;
      state.iceServers = onlyTurn(msg.iceServers, params.get('turn'));
      log(`joined ${msg.room} as ${msg.id}`);
      if (msg.mode === 'sfu') {
        for (const p of msg.peers) state.names[p.id] = p.name;
        const maxkbps = Number(params.get('maxkbps'));
        if (maxkbps > 0) {
          send({ type: 'maxbitrate', bps: Math.round(maxkbps * 1000) });
          log(`asked the server for at most ${maxkbps} kbit/s`);
        }
        sfuStart().catch((e) => log(`sfu: ${e.message}`));
        status(`In SFU room ${msg.room} with ${msg.peers.length} other(s).`);
      } else if (msg.peers.length > 0) {
        // We arrived second: call the one already there.
        startPeer(msg.peers[0].id, msg.peers[0].name, true);
      } else {
        status(`In room ${msg.room}. Waiting for someone to join…`);
      }
      break;
    case 'otherjoin':
      log(`${msg.name || msg.id} joined`);
      if (state.mode === 'sfu') state.names[msg.id] = msg.name;
      else startPeer(msg.id, msg.name, false);
      break;
    case 'offer':
    case 'answer':
    case 'candidate':
      sfuSignal(msg);
      break;
    case 'full':
      log(`room ${msg.room} is full`);
      status(`Room ${msg.room} is full.`);
      leave(false);
      status(`Room ${msg.room} is full.`);
      break;
    case 'leaved':
      log(`left ${msg.room}`);
      break;
    case 'bye':
      if (state.mode === 'sfu') {
        log(`${state.names[msg.id] || msg.id} left`);
        removeTile(msg.id);
        state.pausedPeers.delete(msg.id);
        break;
      }
      log(`${state.remoteName || msg.id} left`);
      if (msg.id === state.remoteId) {
        // Close this connection and be ready for a new one: a fresh RTCPeerConnection per peer.
        closePeer();
        status(`In room ${state.room}. The other side left; waiting for someone to join…`);
      }
      break;
    case 'message':
      if (msg.from === state.remoteId) onPeerSignal(msg.data).catch((e) => log(`signaling error: ${e.message}`));
      break;
    case 'chat':
      addChat(msg.name || msg.from, msg.text);
      break;
    case 'paused':
      // The server paused (or resumed) this peer's video for us: our bandwidth does not carry it.
      log(`${state.names[msg.peer] || msg.peer}: video ${msg.paused ? 'paused (bandwidth)' : 'resumed'}`);
      if (msg.paused) state.pausedPeers.add(msg.peer);
      else state.pausedPeers.delete(msg.peer);
      showPaused(msg.peer);
      break;
    case 'record':
      // The room is recorded on the server now, or no longer: everyone in it is told.
      log(`${msg.on ? 'recording started' : 'recording stopped'} by ${msg.by === state.id ? 'you' : state.names[msg.by] || msg.by}`);
      showRecording(msg.on);
      break;
    case 'speaker':
      // The server heard this participant speak (audio levels, debounced): highlight its tile, put it first.
      if (state.speaker !== msg.peer) log(`${msg.peer === state.id ? 'you' : state.names[msg.peer] || msg.peer}: speaking`);
      state.speaker = msg.peer;
      showSpeaker();
      break;
    case 'error':
      log(`server error ${msg.code}: ${msg.message}`);
      break;
  }
}

// ---- the peer connection -------------------------------------------------------------------------------------

function startPeer(id, name, polite) {
  closePeer();
  state.remoteId = id;
  state.remoteName = name || id;
  state.polite = polite;
  $('remote-label').textContent = `remote: ${state.remoteName}`;
  status(`Calling ${state.remoteName}…`);
  const pc = new RTCPeerConnection({
    iceServers: state.iceServers,
    iceTransportPolicy: $('relay').checked ? 'relay' : 'all',
  });
  state.pc = pc;
  state.remote = new MediaStream();
  $('remote-video').srcObject = state.remote;
  for (const track of state.local.getTracks()) pc.addTrack(track, state.local);
  if (!state.local.getVideoTracks().length) {
    // Voice call: still receive video if the other side sends it, and have a sender ready for screen sharing.
    pc.addTransceiver('video', { direction: 'recvonly' });
  }
  pc.ontrack = (ev) => {
    state.remote.addTrack(ev.track);
    ev.track.onended = () => state.remote.removeTrack(ev.track);
    updatePeerControls();
  };
  pc.onicecandidate = (ev) => {
    if (ev.candidate) send({ type: 'message', to: id, data: { candidate: ev.candidate.toJSON() } });
  };
  pc.onnegotiationneeded = async () => {
    // The newcomer makes the first offer; the other side only renegotiates once a first exchange is done.
    // (Two first offers crossing would be resolved by the politeness rule below, but cost a round trip.)
    if (!polite && !pc.remoteDescription) return;
    try {
      state.makingOffer = true;
      await pc.setLocalDescription();
      send({ type: 'message', to: id, data: { description: pc.localDescription.toJSON() } });
    } catch (e) {
      log(`negotiation failed: ${e.message}`);
    } finally {
      state.makingOffer = false;
    }
  };
  pc.onconnectionstatechange = () => {
    log(`connection ${pc.connectionState}`);
    if (pc.connectionState === 'connected') status(`In a call with ${state.remoteName}.`);
    if (pc.connectionState === 'failed') status('The call failed: no network path (try again, or force relay).');
  };
  // One data channel, negotiated on both sides (id 0): files, and nothing waits for ondatachannel.
  const dc = pc.createDataChannel('files', { negotiated: true, id: 0 });
  dc.binaryType = 'arraybuffer';
  dc.bufferedAmountLowThreshold = 256 * 1024;
  dc.onopen = dc.onclose = updatePeerControls;
  dc.onmessage = (ev) => onData(ev.data);
  state.dc = dc;
}

async function onPeerSignal(data) {
  const pc = state.pc;
  if (!pc) return;
  if (data.description) {
    const d = data.description;
    const collision = d.type === 'offer' && (state.makingOffer || pc.signalingState !== 'stable');
    state.ignoreOffer = !state.polite && collision;
    if (state.ignoreOffer) return;
    await pc.setRemoteDescription(d);
    if (d.type === 'offer') {
      await pc.setLocalDescription();
      send({ type: 'message', to: state.remoteId, data: { description: pc.localDescription.toJSON() } });
    }
  } else if (data.candidate) {
    try {
      await pc.addIceCandidate(data.candidate);
    } catch (e) {
      if (!state.ignoreOffer) log(`bad candidate: ${e.message}`);
    }
  }
}

function closePeer() {
  if (state.recorder && state.recorder.state !== 'inactive') state.recorder.stop();
  if (state.dc) state.dc.close();
  if (state.pc) state.pc.close();
  state.pc = state.dc = null;
  state.remoteId = null;
  state.remote = null;
  state.makingOffer = state.ignoreOffer = false;
  $('remote-video').srcObject = null;
  $('remote-label').textContent = 'remote: nobody yet';
  updatePeerControls();
}

// ---- SFU rooms: one connection to the server ------------------------------------------------------------------

async function sfuStart() {
  const pc = new RTCPeerConnection({
    iceServers: state.iceServers,
    iceTransportPolicy: $('relay').checked ? 'relay' : 'all',
  });
  state.pc = pc;
  $('grid').hidden = false;
  $('remote-video').closest('figure').hidden = true;
  for (const track of state.local.getTracks()) {
    const init = { direction: 'sendonly', streams: [state.local] };
    if (track.kind === 'video' && $('simulcast').checked) {
      init.sendEncodings = [
        { rid: 'l', scaleResolutionDownBy: 4, maxBitrate: 150000 },
        { rid: 'm', scaleResolutionDownBy: 2, maxBitrate: 500000 },
        { rid: 'h', maxBitrate: 1500000 },
      ];
    }
    pc.addTransceiver(track, init);
  }
  const dc = pc.createDataChannel('room');
  dc.binaryType = 'arraybuffer';
  dc.bufferedAmountLowThreshold = 256 * 1024;
  dc.onopen = dc.onclose = updatePeerControls;
  dc.onmessage = (ev) => onData(ev.data);
  state.dc = dc;
  pc.ontrack = (ev) => {
    const id = ev.streams[0] ? ev.streams[0].id : 'unknown';
    const video = tile(id);
    video.srcObject.addTrack(ev.track);
    ev.track.onended = () => video.srcObject && video.srcObject.removeTrack(ev.track);
    state.remote = video.srcObject;
    updatePeerControls();
  };
  pc.onicecandidate = (ev) => {
    if (ev.candidate && ev.candidate.candidate) {
      send({ type: 'candidate', candidate: ev.candidate.candidate, sdpMid: ev.candidate.sdpMid, sdpMLineIndex: ev.candidate.sdpMLineIndex });
    }
  };
  pc.onconnectionstatechange = () => log(`server connection ${pc.connectionState}`);
  await pc.setLocalDescription(await pc.createOffer());
  send({ type: 'offer', sdp: pc.localDescription.sdp });
}

function sfuSignal(msg) {
  state.sfuQueue = state.sfuQueue.then(async () => {
    const pc = state.pc;
    if (!pc) return;
    if (msg.type === 'candidate') {
      await pc.addIceCandidate({ candidate: msg.candidate, sdpMid: msg.sdpMid, sdpMLineIndex: msg.sdpMLineIndex });
      return;
    }
    await pc.setRemoteDescription({ type: msg.type, sdp: msg.sdp });
    if (msg.type === 'offer') {
      await pc.setLocalDescription(await pc.createAnswer());
      send({ type: 'answer', sdp: pc.localDescription.sdp });
    }
  }).catch((e) => log(`sfu signaling: ${e.message}`));
}

function tile(id) {
  let fig = document.querySelector(`#grid figure[data-peer="${CSS.escape(id)}"]`);
  if (!fig) {
    fig = document.createElement('figure');
    fig.dataset.peer = id;
    const video = document.createElement('video');
    video.autoplay = true;
    video.playsInline = true;
    video.srcObject = new MediaStream();
    const cap = document.createElement('figcaption');
    cap.textContent = state.names[id] || id;
    const layer = document.createElement('select');
    layer.className = 'layer';
    layer.title = 'Simulcast layer to receive (when this participant sends simulcast)';
    for (const [v, t] of [['auto', 'auto'], ['l', 'low'], ['m', 'medium'], ['h', 'high']]) layer.append(new Option(t, v));
    layer.onchange = () => send({ type: 'layer', peer: id, rid: layer.value });
    cap.append(' ', layer);
    const note = document.createElement('div');
    note.className = 'paused-note';
    note.textContent = 'video paused (bandwidth)';
    fig.append(video, note, cap);
    $('grid').append(fig);
    showPaused(id);
    showSpeaker();
  }
  return fig.querySelector('video');
}

// Shows whether the room is recorded on the server, and what the button would do.
function showRecording(on) {
  state.recording = on;
  $('recording-note').hidden = !on;
  $('server-record').textContent = on ? 'Stop server recording' : 'Record on server';
}

// Marks the speaker's tile (the first in the grid, outlined); our own video when it is us.
function showSpeaker() {
  for (const fig of document.querySelectorAll('#grid figure')) fig.classList.toggle('speaking', fig.dataset.peer === state.speaker);
  const me = $('local-video');
  if (me) me.classList.toggle('speaking', state.speaker !== undefined && state.speaker === state.id);
}

// Shows on a peer's tile whether the server paused its video for us (see the `paused` message).
function showPaused(id) {
  const fig = document.querySelector(`#grid figure[data-peer="${CSS.escape(id)}"]`);
  if (fig) fig.classList.toggle('paused', state.pausedPeers.has(id));
}

function removeTile(id) {
  const fig = document.querySelector(`#grid figure[data-peer="${CSS.escape(id)}"]`);
  if (fig) fig.remove();
}

// ---- media controls ------------------------------------------------------------------------------------------

function toggleTracks(kind, button, offText, onText) {
  const tracks = kind === 'audio' ? state.local.getAudioTracks() : state.local.getVideoTracks();
  if (!tracks.length) return;
  const enabled = !tracks[0].enabled;
  tracks.forEach((t) => (t.enabled = enabled));
  button.textContent = enabled ? offText : onText;
}

async function shareScreen() {
  if (state.screen) return stopSharing();
  let screen;
  try {
    screen = await navigator.mediaDevices.getDisplayMedia({ video: true });
  } catch (e) {
    log(`screen sharing refused: ${e.message}`);
    return;
  }
  state.screen = screen;
  const track = screen.getVideoTracks()[0];
  track.onended = stopSharing;
  $('local-video').srcObject = screen;
  $('share').textContent = 'Stop sharing';
  if (state.pc) {
    const tr = state.pc.getTransceivers().find((t) => t.receiver.track.kind === 'video');
    await tr.sender.replaceTrack(track);
    if (tr.direction === 'recvonly') tr.direction = 'sendrecv'; // voice call: renegotiates
  }
}

async function stopSharing() {
  if (!state.screen) return;
  state.screen.getTracks().forEach((t) => t.stop());
  state.screen = null;
  $('share').textContent = 'Share screen';
  if (!state.local) return;
  $('local-video').srcObject = state.local;
  if (state.pc) {
    const tr = state.pc.getTransceivers().find((t) => t.receiver.track.kind === 'video');
    await tr.sender.replaceTrack(state.local.getVideoTracks()[0] || null);
  }
}

function snapshot() {
  const video = $('remote-video');
  const canvas = $('snapshot-canvas');
  canvas.width = video.videoWidth || 640;
  canvas.height = video.videoHeight || 480;
  canvas.getContext('2d').drawImage(video, 0, 0, canvas.width, canvas.height);
  canvas.hidden = false;
  canvas.toBlob((blob) => addDownload(blob, `snapshot-${Date.now()}.png`, 'snapshot'), 'image/png');
}

function toggleRecording() {
  if (state.recorder && state.recorder.state === 'recording') {
    state.recorder.stop();
    return;
  }
  const chunks = [];
  const rec = new MediaRecorder(state.remote);
  rec.ondataavailable = (ev) => ev.data.size && chunks.push(ev.data);
  rec.onstop = () => {
    $('record').textContent = 'Record';
    addDownload(new Blob(chunks, { type: rec.mimeType }), `call-${Date.now()}.webm`, 'recording');
  };
  rec.start(1000);
  state.recorder = rec;
  $('record').textContent = 'Stop recording';
}

function addDownload(blob, filename, label) {
  const a = document.createElement('a');
  a.href = URL.createObjectURL(blob);
  a.download = filename;
  a.textContent = `download ${label} (${Math.round(blob.size / 1024)} KiB)`;
  a.className = label;
  $('downloads').append(a, ' ');
}

// ---- chat ----------------------------------------------------------------------------------------------------

function addChat(who, text) {
  const li = document.createElement('li');
  const b = document.createElement('b');
  b.textContent = `${who}: `;
  li.append(b, document.createTextNode(text));
  $('chat-log').append(li);
  li.scrollIntoView({ block: 'nearest' });
}

// ---- files over the data channel -----------------------------------------------------------------------------

async function sendFile() {
  const file = $('file-input').files[0];
  const dc = state.dc;
  if (!file || !dc || dc.readyState !== 'open') return;
  $('file-send').disabled = true;
  const progress = $('send-progress');
  progress.max = file.size || 1;
  progress.value = 0;
  dc.send(JSON.stringify({ kind: 'file', name: file.name, size: file.size, type: file.type }));
  for (let off = 0; off < file.size; off += CHUNK) {
    if (dc.bufferedAmount > 4 * 1024 * 1024) {
      await new Promise((resolve) => dc.addEventListener('bufferedamountlow', resolve, { once: true }));
    }
    if (dc.readyState !== 'open') return;
    dc.send(await file.slice(off, off + CHUNK).arrayBuffer());
    progress.value = Math.min(off + CHUNK, file.size);
  }
  log(`sent ${file.name} (${file.size} bytes)`);
  $('file-send').disabled = false;
}

async function onData(data) {
  if (typeof data === 'string') {
    const header = JSON.parse(data);
    if (header.kind !== 'file') return;
    state.incoming = { ...header, chunks: [], got: 0 };
    $('recv-progress').max = header.size || 1;
    $('recv-progress').value = 0;
  } else if (state.incoming) {
    state.incoming.chunks.push(data);
    state.incoming.got += data.byteLength;
    $('recv-progress').value = state.incoming.got;
  }
  const f = state.incoming;
  if (f && f.got >= f.size) {
    state.incoming = null;
    const blob = new Blob(f.chunks, { type: f.type || 'application/octet-stream' });
    const digest = await crypto.subtle.digest('SHA-256', await blob.arrayBuffer());
    const sha256 = [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, '0')).join('');
    state.received.push({ name: f.name, size: f.got, sha256 });
    const li = document.createElement('li');
    const a = document.createElement('a');
    a.href = URL.createObjectURL(blob);
    a.download = f.name;
    a.textContent = `${f.name} (${f.got} bytes)`;
    li.append(a);
    $('received-files').append(li);
    log(`received ${f.name}, sha256 ${sha256.slice(0, 16)}…`);
  }
}

// ---- wiring --------------------------------------------------------------------------------------------------

$('join-form').onsubmit = (ev) => {
  ev.preventDefault();
  join();
};
$('hangup').onclick = () => leave(true);
$('mute').onclick = () => toggleTracks('audio', $('mute'), 'Mute', 'Unmute');
$('camera').onclick = () => toggleTracks('video', $('camera'), 'Camera off', 'Camera on');
$('share').onclick = shareScreen;
$('snapshot').onclick = snapshot;
$('record').onclick = toggleRecording;
$('server-record').onclick = () => send({ type: 'record', on: !state.recording });
$('file-send').onclick = sendFile;
$('chat-form').onsubmit = (ev) => {
  ev.preventDefault();
  const text = $('chat-input').value;
  if (!text.trim()) return;
  send({ type: 'chat', text });
  addChat('you', text);
  $('chat-input').value = '';
};

/** The ICE servers with only the TURN URLs of one transport (`tls`: the `turns:` ones), or all of them. */
function onlyTurn(servers, transport) {
  if (!['udp', 'tcp', 'tls'].includes(transport)) return servers;
  const keep = (u) => !u.startsWith('turn') || (transport === 'tls' ? u.startsWith('turns:') : u.startsWith('turn:') && u.endsWith(`transport=${transport}`));
  return servers.map((s) => ({ ...s, urls: [].concat(s.urls).filter(keep) })).filter((s) => s.urls.length > 0);
}

$('room').value = params.get('room') || '';
$('name').value = params.get('name') || '';
if (params.get('media') === 'audio') $('media').value = 'audio';
if (params.get('mode') === 'sfu') $('mode').value = 'sfu';
$('simulcast').checked = params.get('simulcast') === '1';
$('relay').checked = params.get('relay') === '1';
setInCall(false);
if (params.get('autojoin') === '1' && $('room').value) join();

// The call panel: path (direct, or relayed over UDP/TCP/TLS), bitrate each way, RTT and loss, once a second.
const callStats = { prev: null, path: null, inBps: 0, outBps: 0, rttMs: null, lossPct: null, samples: 0 };
state.callStats = callStats;
const kbps = (bps) => (bps >= 1e6 ? `${(bps / 1e6).toFixed(2)} Mbit/s` : `${Math.round(bps / 1e3)} kbit/s`);
setInterval(async () => {
  const panel = $('callstats');
  if (!state.pc) {
    panel.hidden = true;
    callStats.prev = null;
    return;
  }
  const stats = await state.pc.getStats();
  let pair = null;
  let bytesIn = 0, bytesOut = 0, lost = 0, received = 0;
  stats.forEach((r) => {
    if (r.type === 'transport' && r.selectedCandidatePairId) pair = stats.get(r.selectedCandidatePairId);
    if (r.type === 'inbound-rtp') { bytesIn += r.bytesReceived || 0; lost += Math.max(0, r.packetsLost || 0); received += r.packetsReceived || 0; }
    if (r.type === 'outbound-rtp') bytesOut += r.bytesSent || 0;
  });
  const now = performance.now();
  if (callStats.prev) {
    const dt = Math.max(0.001, (now - callStats.prev.at) / 1000);
    callStats.inBps = ((bytesIn - callStats.prev.bytesIn) * 8) / dt;
    callStats.outBps = ((bytesOut - callStats.prev.bytesOut) * 8) / dt;
    const dLost = lost - callStats.prev.lost, dRecv = received - callStats.prev.received;
    callStats.lossPct = dLost + dRecv > 0 ? (100 * dLost) / (dLost + dRecv) : 0;
    callStats.samples += 1;
  }
  callStats.prev = { at: now, bytesIn, bytesOut, lost, received };
  if (pair) {
    const local = stats.get(pair.localCandidateId);
    callStats.path = local && local.candidateType === 'relay' ? `relay via ${local.relayProtocol || 'udp'}` : `direct (${local ? local.candidateType : '?'})`;
    callStats.rttMs = pair.currentRoundTripTime != null ? pair.currentRoundTripTime * 1000 : null;
  }
  panel.hidden = false;
  $('cs-path').textContent = `path: ${callStats.path || 'connecting'}`;
  $('cs-rate').textContent = `↓ ${kbps(callStats.inBps)} ↑ ${kbps(callStats.outBps)}`;
  $('cs-rtt').textContent = `RTT ${callStats.rttMs == null ? '-' : `${callStats.rttMs.toFixed(0)} ms`}`;
  $('cs-loss').textContent = `loss ${callStats.lossPct == null ? '-' : `${callStats.lossPct.toFixed(1)}%`}`;
}, 1000);
