// A Hum voice-channel participant in the browser, written only from docs/protocol.md: the relay's
// JSON protocol over WebSocket, Ed25519 login with WebCrypto, and the browser's own WebRTC stack
// (an implementation independent of the webrtc crate the native client uses). The relay
// connection, login and the channel mesh are the browser client's own (ui/src/web/protocol.ts and
// mesh.ts, which run.mjs serves compiled as ./web/*.js), so this test also covers them.
//
// run(params) logs in, joins the server by invite and the voice channel, connects to everyone in
// it by the channel mesh rule (the smaller user id offers), sends a known signal (a decoded WAV
// or a tone) as its track, and records what each peer sends, separately per peer. It resolves
// with per-peer recordings (16-bit PCM, base64) and WebRTC stats for run.mjs to write out.

import { RelayConnection, importSeed, login as relayLogin } from "./web/protocol.js";
import { VoiceMesh } from "./web/mesh.js";
import { SfuConnection } from "./web/sfu.js";

const b64urlToBytes = (s) =>
  Uint8Array.from(atob(s.replace(/-/g, "+").replace(/_/g, "/")), (c) => c.charCodeAt(0));
const hex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function log(...args) {
  console.log("[page]", ...args);
}

/** Logs in with the 32-byte seed Hum's identity files hold (the shared handshake in
 *  ui/src/web/protocol.ts); returns the user id. */
async function login(relay, secretHex, displayName) {
  const key = await importSeed(secretHex, true);
  const jwk = await crypto.subtle.exportKey("jwk", key);
  const welcome = await relayLogin(relay, key, hex(b64urlToBytes(jwk.x)), displayName, "hum-web-test/0.1");
  return welcome.user.id;
}

/** The outgoing track: a decoded WAV looped, or a sine tone, through WebAudio. */
async function outgoingTrack(ctx, params) {
  const dest = ctx.createMediaStreamDestination();
  const gain = ctx.createGain();
  gain.connect(dest);
  if (params.playUrl) {
    const data = await (await fetch(params.playUrl)).arrayBuffer();
    const src = ctx.createBufferSource();
    src.buffer = await ctx.decodeAudioData(data);
    src.loop = true;
    src.connect(gain);
    src.start();
  } else {
    const osc = ctx.createOscillator();
    osc.frequency.value = params.tone;
    gain.gain.value = params.amplitude ?? 0.3;
    osc.connect(gain);
    osc.start();
  }
  return dest.stream;
}

/** Records a remote stream's audio (channel 0) into Float32 chunks. */
function recordStream(ctx, stream, sink) {
  // Chromium only feeds a remote WebRTC stream into WebAudio while a media element plays it.
  const el = new Audio();
  el.muted = true;
  el.srcObject = stream;
  el.play().catch(() => {});
  const src = ctx.createMediaStreamSource(stream);
  const node = new AudioWorkletNode(ctx, "recorder");
  node.port.onmessage = (e) => sink.push(e.data);
  const mute = ctx.createGain();
  mute.gain.value = 0;
  src.connect(node).connect(mute).connect(ctx.destination);
  return el;
}

function pcm16Base64(chunks) {
  const n = chunks.reduce((a, c) => a + c.length, 0);
  const out = new Int16Array(n);
  let i = 0;
  for (const c of chunks) {
    for (const s of c) out[i++] = Math.max(-32768, Math.min(32767, Math.round(s * 32767)));
  }
  const bytes = new Uint8Array(out.buffer);
  let bin = "";
  for (let k = 0; k < bytes.length; k += 0x8000) {
    bin += String.fromCharCode.apply(null, bytes.subarray(k, k + 0x8000));
  }
  return btoa(bin);
}

async function peerStats(pc) {
  const out = { inbound: null, outbound: null, codec: null, pair: null, local: null, remote: null };
  const report = await pc.getStats();
  const byId = new Map();
  report.forEach((s) => byId.set(s.id, s));
  report.forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "audio") {
      out.inbound = {
        packetsReceived: s.packetsReceived,
        packetsLost: s.packetsLost,
        jitter: s.jitter,
        bytesReceived: s.bytesReceived,
      };
      const c = byId.get(s.codecId);
      if (c) out.codec = { mimeType: c.mimeType, clockRate: c.clockRate, channels: c.channels, sdpFmtpLine: c.sdpFmtpLine };
    }
    if (s.type === "outbound-rtp" && s.kind === "audio") {
      out.outbound = { packetsSent: s.packetsSent, bytesSent: s.bytesSent };
    }
    if (s.type === "transport" && s.selectedCandidatePairId) {
      const p = byId.get(s.selectedCandidatePairId);
      if (p) {
        out.pair = { state: p.state, currentRoundTripTime: p.currentRoundTripTime };
        const l = byId.get(p.localCandidateId);
        const r = byId.get(p.remoteCandidateId);
        if (l) out.local = { type: l.candidateType, address: l.address, port: l.port, protocol: l.protocol };
        if (r) out.remote = { type: r.candidateType, address: r.address, port: r.port, protocol: r.protocol };
      }
    }
  });
  return out;
}

/**
 * params: { relay, secretKey, displayName, invite, channel (name), playUrl | tone, duration (s),
 *           untilPeersLeft (bool), minPeers, restartAfter (s after connecting, or null) }
 * report(kind, data): progress callback into run.mjs.
 */
export async function run(params, report = () => {}) {
  const ctx = new AudioContext({ sampleRate: 48000 });
  await ctx.audioWorklet.addModule("./recorder-worklet.js");
  await ctx.resume();
  const outStream = await outgoingTrack(ctx, params);
  const outTrack = outStream.getAudioTracks()[0];

  const relay = new RelayConnection(params.relay);
  await relay.open();
  const me = await login(relay, params.secretKey, params.displayName);
  log("logged in as", me);

  const server = await relay.request("invite_join", { code: params.invite });
  const chan = server.server.channels.find((c) => c.name === params.channel);
  if (!chan) throw new Error(`no channel named ${params.channel} in server ${server.server.name}`);

  const errors = [];
  const fail = (what, e) => {
    const m = `${what}: ${e && e.message ? e.message : e}`;
    log("error", m);
    errors.push(m);
  };
  if (params.sfu) return runSfu(params, report, { ctx, outStream, relay, me, chan, errors, fail });
  // What this test keeps per peer besides the mesh's own record.
  const extra = new Map();
  const extraOf = (user) => {
    if (!extra.has(user)) extra.set(user, { chunks: [], els: [], stats: null });
    return extra.get(user);
  };
  // The newest stats of a peer that name its inbound audio and codec (Chromium leaves the codec
  // out of a report now and then, e.g. just after an ICE restart; a later snapshot has it).
  const keepStats = (user, s) => {
    if (s && s.inbound && s.codec) extraOf(user).stats = s;
  };
  const mesh = new VoiceMesh(relay, me, chan.id, outStream, {
    onTrack: (user, stream, track) => {
      log("track from", user.slice(0, 8), track.kind);
      const x = extraOf(user);
      x.els.push(recordStream(ctx, stream, x.chunks));
    },
    onState: (user, state) => {
      log("connection to", user.slice(0, 8), state);
      const p = mesh.peers.get(user);
      if (state === "connected" && p && p.states.filter((s) => s === "connected").length === 1) {
        report("peer_connected", { user, offerer: p.offerer });
        if (params.restartAfter) {
          setTimeout(() => {
            report("ice_restart", { user, offerer: p.offerer });
            mesh.restartIce(user);
          }, params.restartAfter * 1000);
        }
      }
    },
    beforeClose: async (p) => {
      // Keep the connection's last stats: they describe the call that just ended. A closing
      // connection may no longer answer getStats; then the last snapshot of the loop stands.
      keepStats(p.user, await peerStats(p.pc).catch(() => null));
    },
    onLeft: (user) => report("peer_left", { user }),
    onError: fail,
  });
  relay.onEvent = (ev) => mesh.handleEvent(ev);

  const joined = await relay.request("channel_join", { channel: chan.id, voice: {} });
  const others = joined.channel.roster.map((e) => e.user.id).filter((u) => u !== me);
  report("joined", { user: me, channel: chan.id, others });
  // The mesh rule: the smaller user id offers; the others offer to us when they see us join.
  mesh.start(others);

  const start = performance.now();
  const deadline = start + params.duration * 1000;
  let lastSnapshot = start;
  while (performance.now() < deadline) {
    await sleep(100);
    if (performance.now() - lastSnapshot >= 1000) {
      lastSnapshot = performance.now();
      for (const p of mesh.peers.values()) {
        if (p.connectedAt && !p.left) keepStats(p.user, await peerStats(p.pc).catch(() => null));
      }
    }
    if (relay.closed) {
      errors.push(relay.closed);
      break;
    }
    const all = [...mesh.peers.values()];
    const connected = all.filter((p) => p.connectedAt);
    if (params.untilPeersLeft && connected.length >= (params.minPeers ?? 1) && connected.every((p) => p.left)) {
      break;
    }
  }

  const result = { user: me, channel: chan.id, errors, elapsed: (performance.now() - start) / 1000, peers: {} };
  for (const p of mesh.peers.values()) {
    const x = extraOf(p.user);
    if (!p.left) keepStats(p.user, await peerStats(p.pc).catch(() => null));
    const stats = x.stats;
    result.peers[p.user] = {
      offerer: p.offerer,
      states: p.states,
      connectedAfter: p.connectedAt ? (p.connectedAt - start) / 1000 : null,
      restartedAfter: p.restartedAt ? (p.restartedAt - start) / 1000 : null,
      localUfrags: p.localUfrags,
      remoteUfrags: p.remoteUfrags,
      candidatesSent: p.candidatesSent,
      candidatesReceived: p.candidatesReceived,
      localSdp: p.pc.localDescription ? p.pc.localDescription.sdp : null,
      remoteSdp: p.pc.remoteDescription ? p.pc.remoteDescription.sdp : null,
      stats,
      sampleRate: ctx.sampleRate,
      samples: x.chunks.reduce((a, c) => a + c.length, 0),
      pcm16: pcm16Base64(x.chunks),
    };
  }
  await relay.request("channel_leave").catch(() => {});
  mesh.close();
  relay.close();
  await ctx.close();
  return result;
}

/** Inbound/outbound RTP of the SFU connection, by the receiving track's id. */
async function sfuStats(pc) {
  const report = await pc.getStats();
  const byId = new Map();
  report.forEach((s) => byId.set(s.id, s));
  const inbound = {};
  const outbound = {};
  let pair = null;
  report.forEach((s) => {
    if (s.type === "inbound-rtp") {
      const c = byId.get(s.codecId);
      inbound[s.trackIdentifier] = {
        kind: s.kind,
        packetsReceived: s.packetsReceived,
        packetsLost: s.packetsLost,
        jitter: s.jitter,
        framesDecoded: s.framesDecoded,
        frameWidth: s.frameWidth,
        frameHeight: s.frameHeight,
        codec: c ? c.mimeType : null,
      };
    }
    if (s.type === "outbound-rtp") {
      const c = byId.get(s.codecId);
      outbound[s.kind + (s.rid ? `-${s.rid}` : "")] = {
        packetsSent: s.packetsSent,
        framesEncoded: s.framesEncoded,
        frameWidth: s.frameWidth,
        codec: c ? c.mimeType : null,
      };
    }
    if (s.type === "transport" && s.selectedCandidatePairId) {
      const p = byId.get(s.selectedCandidatePairId);
      if (p) pair = { state: p.state, currentRoundTripTime: p.currentRoundTripTime };
    }
  });
  return { inbound, outbound, pair };
}

/** The same participant on the relay's SFU (ui/src/web/sfu.ts): one connection, every other
 *  member's track in it, named by its msid. Resolves with the same per-peer shape as `run`. */
async function runSfu(params, report, { ctx, outStream, relay, me, chan, errors, fail }) {
  if (params.camera) {
    // Chromium's fake camera (--use-fake-device-for-media-stream), one VP8 layer.
    const size = params.simulcast ? { width: 1280, height: 720 } : { width: 320, height: 180 };
    const cam = await navigator.mediaDevices.getUserMedia({ video: { ...size, frameRate: 15 } });
    for (const t of cam.getVideoTracks()) outStream.addTrack(t);
  }
  const peers = new Map();
  const peerOf = (user) => {
    if (!peers.has(user)) peers.set(user, { chunks: [], els: [], tracks: {}, joinedAt: null, left: false, heardAt: null });
    return peers.get(user);
  };
  const start = performance.now();
  let sfu = null;
  const roster = new Set();
  relay.onEvent = (ev) => {
    if (ev.type === "roster_join" && ev.channel === chan.id && ev.entry.user.id !== me) {
      roster.add(ev.entry.user.id);
      peerOf(ev.entry.user.id).joinedAt = performance.now();
    }
    if (ev.type === "roster_leave" && ev.channel === chan.id && ev.user !== me) {
      roster.delete(ev.user);
      peerOf(ev.user).left = true;
      report("peer_left", { user: ev.user });
    }
    // Alone again, the channel goes back to mesh; before that it must stay on the SFU.
    if (ev.type === "channel_mode" && ev.channel === chan.id && ev.mode !== "sfu" && roster.size > 0)
      fail("mode", `the channel moved to ${ev.mode} with ${roster.size} others in it`);
    sfu?.handleEvent(ev);
  };
  const joined = await relay.request("channel_join", { channel: chan.id, voice: { video: !!params.camera } });
  if (joined.mode !== "sfu") throw new Error(`the relay says channel ${chan.id} is a ${joined.mode ?? "mesh"}, not on the SFU`);
  for (const e of joined.channel.roster) if (e.user.id !== me) roster.add(e.user.id);
  sfu = new SfuConnection(relay, me, chan.id, outStream, {
    onTrack: (user, stream, track) => {
      log("SFU track from", user.slice(0, 8), track.kind, track.id);
      const p = peerOf(user);
      p.tracks[track.id] = track.kind;
      if (track.kind === "audio") {
        p.heardAt ??= performance.now();
        p.els.push(recordStream(ctx, new MediaStream([track]), p.chunks));
        report("peer_connected", { user });
      } else if (track.kind === "video") {
        // Shown (muted, off screen), as a tile would: the frames are decoded for a sink.
        const v = document.createElement("video");
        v.muted = true;
        v.autoplay = true;
        v.srcObject = new MediaStream([track]);
        document.body.appendChild(v);
        v.play().catch(() => {});
        p.els.push(v);
      }
    },
    onState: (state) => log("SFU connection", state),
    onError: fail,
  });
  sfu.simulcast = !!params.simulcast;
  await sfu.join();
  report("joined", { user: me, channel: chan.id, others: [...roster], mode: joined.mode });

  const deadline = start + params.duration * 1000;
  let last = null;
  // Each track's newest stats (a track whose owner left drops out of later reports).
  const inboundSeen = {};
  const outboundMax = {};
  // When each `sfu_layers` list came and the encode counts at each stats snapshot (ms since the
  // start): the test judges a left-out layer by what it encoded after the list, not in total.
  const layerLog = [];
  const encodedLog = [];
  let lastSnapshot = start;
  while (performance.now() < deadline) {
    await sleep(100);
    for (let i = layerLog.length; i < sfu.layers.length; i++) layerLog.push({ at: performance.now() - start, rids: sfu.layers[i] });
    if (performance.now() - lastSnapshot >= 1000 && sfu.pc) {
      lastSnapshot = performance.now();
      last = (await sfuStats(sfu.pc).catch(() => null)) ?? last;
      if (last) Object.assign(inboundSeen, last.inbound);
      for (const [k, o] of Object.entries(last?.outbound ?? {})) outboundMax[k] = Math.max(outboundMax[k] ?? 0, o.framesEncoded ?? o.packetsSent ?? 0);
      encodedLog.push({ at: performance.now() - start, encoded: { ...outboundMax } });
    }
    if (relay.closed) {
      errors.push(relay.closed);
      break;
    }
    const heard = [...peers.values()].filter((p) => p.heardAt);
    if (params.untilPeersLeft && heard.length >= (params.minPeers ?? 1) && heard.every((p) => p.left)) break;
  }
  const result = {
    user: me,
    channel: chan.id,
    mode: joined.mode,
    errors,
    elapsed: (performance.now() - start) / 1000,
    sfu: {
      states: sfu.states,
      connectedAfter: sfu.connectedAt ? (sfu.connectedAt - start) / 1000 : null,
      offersAnswered: sfu.offersAnswered,
      layers: sfu.layers,
      // Each layer's most frames encoded (a paused layer stops counting).
      encoded: outboundMax,
      layerLog,
      encodedLog,
      localSdp: sfu.pc?.localDescription?.sdp ?? null,
      remoteSdp: sfu.pc?.remoteDescription?.sdp ?? null,
      outbound: last ? last.outbound : null,
      pair: last ? last.pair : null,
    },
    peers: {},
  };
  for (const [user, p] of peers) {
    const inbound = {};
    // By kind; a screen track (the SFU keeps its `screen-` prefix) apart from the camera.
    for (const [id, kind] of Object.entries(p.tracks)) inbound[id.startsWith("screen") ? "screen" : kind] = inboundSeen[id] ?? null;
    result.peers[user] = {
      heardAfter: p.heardAt ? (p.heardAt - start) / 1000 : null,
      left: p.left,
      tracks: p.tracks,
      inbound,
      sampleRate: ctx.sampleRate,
      samples: p.chunks.reduce((a, c) => a + c.length, 0),
      pcm16: pcm16Base64(p.chunks),
    };
  }
  await relay.request("channel_leave").catch(() => {});
  sfu.close();
  relay.close();
  await ctx.close();
  return result;
}
