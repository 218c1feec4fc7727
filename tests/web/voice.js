// A Hum voice-channel participant in the browser, written only from docs/protocol.md: the relay's
// JSON protocol over WebSocket, Ed25519 login with WebCrypto, and the browser's own WebRTC stack
// (an implementation independent of the webrtc crate the native client uses).
//
// run(params) logs in, joins the server by invite and the voice channel, connects to everyone in
// it by the channel mesh rule (the smaller user id offers), sends a known signal (a decoded WAV
// or a tone) as its track, and records what each peer sends, separately per peer. It resolves
// with per-peer recordings (16-bit PCM, base64) and WebRTC stats for run.mjs to write out.

const LOGIN_CONTEXT = "hum-relay-login-v1\0";

const hex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
const unhex = (s) => new Uint8Array(s.match(/../g).map((h) => parseInt(h, 16)));
const b64urlToBytes = (s) =>
  Uint8Array.from(atob(s.replace(/-/g, "+").replace(/_/g, "/")), (c) => c.charCodeAt(0));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const ufrag = (sdp) => (sdp.match(/^a=ice-ufrag:(.*)$/m) || [])[1]?.trim() ?? null;

function log(...args) {
  console.log("[page]", ...args);
}

/** The relay connection: requests matched to answers by id, events to a callback. */
class Relay {
  constructor(url) {
    this.url = url;
    this.nextId = 1;
    this.pending = new Map();
    this.onEvent = () => {};
    this.closed = null;
  }

  open() {
    return new Promise((resolve, reject) => {
      this.ws = new WebSocket(this.url);
      this.ws.onopen = () => resolve();
      this.ws.onerror = () => reject(new Error(`cannot open a WebSocket to ${this.url}`));
      this.ws.onclose = (e) => {
        this.closed = `relay closed the connection (code ${e.code} ${e.reason})`;
        for (const p of this.pending.values()) p.reject(new Error(this.closed));
        this.pending.clear();
      };
      this.ws.onmessage = (m) => this.frame(JSON.parse(m.data));
    });
  }

  frame(msg) {
    if (msg.type === "event") {
      this.onEvent(msg.event);
      return;
    }
    const p = this.pending.get(msg.re);
    if (!p) return;
    this.pending.delete(msg.re);
    if (msg.type === "reply") p.resolve(msg.reply);
    else p.reject(new Error(`${p.type}: ${msg.code}: ${msg.message}`));
  }

  request(type, fields = {}) {
    if (this.closed) return Promise.reject(new Error(this.closed));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, type });
      this.ws.send(JSON.stringify({ id, type, ...fields }));
    });
  }

  close() {
    this.ws.close();
  }
}

/** An Ed25519 key from the 32-byte seed Hum's identity files hold, and its public key. */
async function importKey(secretHex) {
  // PKCS#8 for an Ed25519 private key (RFC 8410): a fixed 16-byte header and the seed.
  const pkcs8 = new Uint8Array([
    ...unhex("302e020100300506032b657004220420"),
    ...unhex(secretHex),
  ]);
  const key = await crypto.subtle.importKey("pkcs8", pkcs8, { name: "Ed25519" }, true, ["sign"]);
  const jwk = await crypto.subtle.exportKey("jwk", key);
  return { key, publicHex: hex(b64urlToBytes(jwk.x)) };
}

/** hello -> challenge -> sign("hum-relay-login-v1\0" || nonce) -> login -> welcome. */
async function login(relay, secretHex, displayName) {
  const { key, publicHex } = await importKey(secretHex);
  const challenge = await relay.request("hello", { protocol: 1, client: "hum-web-test/0.1" });
  const msg = new Uint8Array([...new TextEncoder().encode(LOGIN_CONTEXT), ...unhex(challenge.nonce)]);
  const sig = new Uint8Array(await crypto.subtle.sign({ name: "Ed25519" }, key, msg));
  const welcome = await relay.request("login", {
    public_key: publicHex,
    signature: hex(sig),
    display_name: displayName,
  });
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

  const relay = new Relay(params.relay);
  await relay.open();
  const me = await login(relay, params.secretKey, params.displayName);
  log("logged in as", me);

  const server = await relay.request("invite_join", { code: params.invite });
  const chan = server.server.channels.find((c) => c.name === params.channel);
  if (!chan) throw new Error(`no channel named ${params.channel} in server ${server.server.name}`);
  const scope = { channel: chan.id };

  const peers = new Map(); // user id -> peer record
  const errors = [];
  const fail = (what, e) => {
    const m = `${what}: ${e && e.message ? e.message : e}`;
    log("error", m);
    errors.push(m);
  };
  const signal = (to, payload) =>
    relay.request("signal", { to, scope, payload }).catch((e) => fail(`signal ${payload.kind} to ${to}`, e));

  function peer(user, offerer) {
    let p = peers.get(user);
    if (p) return p;
    const pc = new RTCPeerConnection({ iceServers: [] });
    p = {
      user,
      pc,
      offerer,
      sdpSent: false,
      queued: [],
      chunks: [],
      connectedAt: null,
      left: false,
      states: [],
      candidatesSent: 0,
      candidatesReceived: 0,
      els: [],
      // ICE credentials of every description applied, in order (ICE restarts renew them).
      localUfrags: [],
      remoteUfrags: [],
      restartedAt: null,
    };
    peers.set(user, p);
    pc.addTrack(outTrack, outStream);
    pc.onicecandidate = (e) => {
      // Trickle ICE: the native side queues candidates until it has our description.
      const payload =
        e.candidate && e.candidate.candidate
          ? {
              kind: "ice",
              candidate: e.candidate.candidate,
              sdp_mid: e.candidate.sdpMid,
              sdp_mline_index: e.candidate.sdpMLineIndex,
              username_fragment: e.candidate.usernameFragment,
            }
          : e.candidate
            ? null
            : { kind: "end_of_candidates" };
      if (!payload) return;
      if (payload.kind === "ice") p.candidatesSent++;
      if (p.sdpSent) signal(user, payload);
      else p.queued.push(payload);
    };
    pc.ontrack = (e) => {
      log("track from", user.slice(0, 8), e.track.kind);
      const stream = e.streams[0] || new MediaStream([e.track]);
      p.els.push(recordStream(ctx, stream, p.chunks));
    };
    pc.onconnectionstatechange = () => {
      p.states.push(pc.connectionState);
      log("connection to", user.slice(0, 8), pc.connectionState);
      if (pc.connectionState === "connected" && !p.connectedAt) {
        p.connectedAt = performance.now();
        report("peer_connected", { user, offerer: p.offerer });
        if (params.restartAfter) {
          setTimeout(() => {
            chain = chain.then(() => restartIce(p)).catch((e) => fail(`ICE restart with ${user}`, e));
          }, params.restartAfter * 1000);
        }
      }
    };
    return p;
  }

  async function sendSdp(p, kind) {
    p.localUfrags.push(ufrag(p.pc.localDescription.sdp));
    await signal(p.user, { kind, sdp: p.pc.localDescription.sdp });
    p.sdpSent = true;
    for (const q of p.queued.splice(0)) signal(p.user, q);
  }

  /** ICE restart mid-call: the offering side re-offers with fresh credentials; the answering
   *  side asks the other to (`renegotiate`), as the engine does. */
  async function restartIce(p) {
    if (p.left) return;
    p.restartedAt = performance.now();
    report("ice_restart", { user: p.user, offerer: p.offerer });
    if (p.offerer) {
      await p.pc.setLocalDescription(await p.pc.createOffer({ iceRestart: true }));
      await sendSdp(p, "offer");
    } else {
      await signal(p.user, { kind: "renegotiate" });
    }
  }

  async function offerTo(user) {
    const p = peer(user, true);
    await p.pc.setLocalDescription(await p.pc.createOffer());
    await sendSdp(p, "offer");
  }

  async function onSignal(from, payload) {
    switch (payload.kind) {
      case "offer": {
        const p = peer(from, false);
        p.remoteUfrags.push(ufrag(payload.sdp));
        await p.pc.setRemoteDescription({ type: "offer", sdp: payload.sdp });
        await p.pc.setLocalDescription(await p.pc.createAnswer());
        await sendSdp(p, "answer");
        break;
      }
      case "answer": {
        const p = peers.get(from);
        if (!p) break;
        p.remoteUfrags.push(ufrag(payload.sdp));
        await p.pc.setRemoteDescription({ type: "answer", sdp: payload.sdp });
        break;
      }
      case "ice": {
        const p = peers.get(from);
        if (!p) break;
        p.candidatesReceived++;
        await p.pc.addIceCandidate({
          candidate: payload.candidate,
          sdpMid: payload.sdp_mid ?? null,
          sdpMLineIndex: payload.sdp_mline_index ?? null,
          usernameFragment: payload.username_fragment ?? null,
        });
        break;
      }
      case "renegotiate": {
        // The other side wants a fresh offer (ICE restart); only the offering side makes one.
        const p = peers.get(from);
        if (p && p.offerer) {
          await p.pc.setLocalDescription(await p.pc.createOffer({ iceRestart: true }));
          await sendSdp(p, "offer");
        }
        break;
      }
      case "bye":
        await closePeer(from);
        break;
      default:
        break;
    }
  }

  async function closePeer(user) {
    const p = peers.get(user);
    if (!p || p.left) return;
    p.left = true;
    // Keep the connection's last stats: they describe the call that just ended.
    p.stats = await peerStats(p.pc).catch(() => null);
    p.pc.close();
    report("peer_left", { user });
  }

  // Events are handled one at a time, in order (an answer before the candidates after it).
  let chain = Promise.resolve();
  relay.onEvent = (ev) => {
    chain = chain.then(async () => {
      try {
        if (ev.type === "signal" && ev.scope.channel === chan.id) {
          await onSignal(ev.from, ev.payload);
        } else if (ev.type === "roster_join" && ev.channel === chan.id && ev.entry.user.id !== me) {
          if (me < ev.entry.user.id) await offerTo(ev.entry.user.id);
        } else if (ev.type === "roster_leave" && ev.channel === chan.id && ev.user !== me) {
          await closePeer(ev.user);
        }
      } catch (e) {
        fail(`handling ${ev.type}`, e);
      }
    });
  };

  const joined = await relay.request("channel_join", { channel: chan.id, voice: {} });
  const others = joined.channel.roster.map((e) => e.user.id).filter((u) => u !== me);
  report("joined", { user: me, channel: chan.id, others });
  // The mesh rule: the smaller user id offers; the others offer to us when they see us join.
  chain = chain.then(async () => {
    for (const u of others) {
      if (me < u) await offerTo(u).catch((e) => fail(`offer to ${u}`, e));
    }
  });

  const start = performance.now();
  const deadline = start + params.duration * 1000;
  while (performance.now() < deadline) {
    await sleep(100);
    if (relay.closed) {
      errors.push(relay.closed);
      break;
    }
    const all = [...peers.values()];
    const connected = all.filter((p) => p.connectedAt);
    if (params.untilPeersLeft && connected.length >= (params.minPeers ?? 1) && connected.every((p) => p.left)) {
      break;
    }
  }

  const result = { user: me, channel: chan.id, errors, elapsed: (performance.now() - start) / 1000, peers: {} };
  for (const p of peers.values()) {
    const stats = p.left ? p.stats : await peerStats(p.pc).catch(() => null);
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
      samples: p.chunks.reduce((a, c) => a + c.length, 0),
      pcm16: pcm16Base64(p.chunks),
    };
  }
  await relay.request("channel_leave").catch(() => {});
  for (const p of peers.values()) p.pc.close();
  relay.close();
  await ctx.close();
  return result;
}
