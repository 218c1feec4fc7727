#!/usr/bin/env node
// Drives the browser client (the web build of ui/, served by the relay with --web-dir) in headless
// Chromium the way a person does: opens an invite link, creates an identity, accepts the invite,
// joins a voice channel by clicking it. The microphone is a WAV file (Chromium's fake capture
// device); what the page plays from each peer is recorded (an AudioWorklet on the remote streams
// the web back end keeps in window.humWeb) and written as from-<user>.wav with result.json. The
// caller (tests/tests/web_client.rs) judges the audio. With --camera the page also turns its
// camera on by the UI's camera button once in the channel (Chromium's fake camera) and reports,
// per peer, what its video tile played (the <video> the shared VideoTile shows a track in:
// videoWidth, frames shown, the track's inbound RTP) and what the page's camera sent.
//
// node tests/web/web_client.mjs --url http://127.0.0.1:PORT/invite/CODE --name NAME
//   --channel NAME --out DIR --mic signal.wav [--camera] [--min-peers 1] [--max-duration 60]
//   [--chromium /usr/bin/chromium]
//
// Progress goes to stdout as one JSON object per line ({"event": "joined", ...}): `loaded`,
// `identity`, `server`, `joined`, `camera` (on, with --camera), `peer_audio`, `peer_video` (a
// peer's tile played its first frame), `done`. The page runs until every peer it heard
// has left (at least --min-peers), or --max-duration. Exit codes: 0 ran (look at result.json),
// 1 the page failed, 2 usage or environment.

import { existsSync, writeFileSync, mkdirSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const here = dirname(fileURLToPath(import.meta.url));
const die = (code, msg) => {
  process.stderr.write(`web_client.mjs: ${msg}\n`);
  process.exit(code);
};
const { values: args } = parseArgs({
  options: {
    url: { type: "string" },
    name: { type: "string", default: "webby" },
    channel: { type: "string" },
    out: { type: "string" },
    mic: { type: "string" },
    camera: { type: "boolean", default: false },
    "min-peers": { type: "string", default: "1" },
    "max-duration": { type: "string", default: "60" },
    chromium: { type: "string", default: process.env.HUM_CHROMIUM || "/usr/bin/chromium" },
  },
});
for (const k of ["url", "channel", "out", "mic"]) if (!args[k]) die(2, `--${k} is required`);
if (!existsSync(args.chromium)) die(2, `Chromium not found at ${args.chromium} (apt-get install chromium, or HUM_CHROMIUM)`);
let chromium;
try {
  ({ chromium } = await import("playwright-core"));
} catch (e) {
  die(2, `playwright-core is not installed: run \`npm ci\` in ${here} (${e.message})`);
}
mkdirSync(args.out, { recursive: true });
const report = (event, data = {}) => process.stdout.write(JSON.stringify({ event, ...data }) + "\n");

// Copies every render quantum of input 0 (channel 0) to the main thread (recorder-worklet.js).
const WORKLET = `class R extends AudioWorkletProcessor { process(i) { const c = i[0] && i[0][0]; if (c) this.port.postMessage(c.slice(0)); return true; } } registerProcessor("rec", R);`;

let browser;
let exitCode = 0;
const t0 = Date.now();
try {
  browser = await chromium.launch({
    executablePath: args.chromium,
    headless: true,
    timeout: 60_000,
    args: [
      "--no-sandbox",
      "--use-fake-ui-for-media-stream",
      "--use-fake-device-for-media-stream",
      `--use-file-for-fake-audio-capture=${resolve(args.mic)}`,
      "--autoplay-policy=no-user-gesture-required",
      "--disable-background-networking",
      "--disable-component-update",
      "--no-first-run",
      "--disable-features=WebRtcHideLocalIpsWithMdns",
    ],
  });
  const page = await browser.newPage();
  page.on("console", (m) => process.stderr.write(`[page] ${m.text()}\n`));
  page.on("pageerror", (e) => process.stderr.write(`[page error] ${e.message}\n`));
  const opened = Date.now();
  await page.goto(args.url);
  await page.getByTestId("display-name").waitFor({ timeout: 30_000 });
  report("loaded", { ms: Date.now() - opened });

  await page.getByTestId("display-name").fill(args.name);
  await page.getByTestId("create-identity").click();
  // The invite in the address is offered once the shell is up (and the relay connected).
  await page.locator('[data-testid="relay-state"][data-state="connected"]').waitFor({ timeout: 30_000 });
  const me = await page.evaluate(() => window.humWeb.status.user_id);
  report("identity", { user: me, ms: Date.now() - opened });
  await page.getByTestId("link-accept").click({ timeout: 30_000 });
  await page.getByTestId(`join-${args.channel}`).waitFor({ timeout: 30_000 });
  report("server", { ms: Date.now() - opened });

  // Record every remote stream the back end gets, from when it arrives.
  await page.evaluate(async (worklet) => {
    const ctx = new AudioContext({ sampleRate: 48000 });
    await ctx.audioWorklet.addModule(URL.createObjectURL(new Blob([worklet], { type: "text/javascript" })));
    await ctx.resume();
    const rec = (window.humRec = { ctx, peers: {}, video: {}, t0: performance.now() });
    // Each peer's video tile as the UI shows it, and the SFU connection's video numbers; the
    // best seen is kept (the tile goes when the peer leaves).
    setInterval(async () => {
      const pc = window.humWeb.sfu && window.humWeb.sfu.pc;
      const stats = pc ? [...(await pc.getStats()).values()] : [];
      for (const v of window.humWeb.videos.tracks.values()) {
        const el = document.querySelector(`[data-testid="video-${v.id}"]`);
        const inbound = stats.find((e) => e.type === "inbound-rtp" && e.kind === "video" && e.trackIdentifier === v.track.id);
        const p = (rec.video[v.id] = rec.video[v.id] || { user: v.user, videoWidth: 0, videoHeight: 0, frames: 0, playbackFrames: 0, framesDecoded: 0 });
        if (el) {
          p.tag = el.tagName.toLowerCase();
          p.source = el.dataset.source || null;
          p.videoWidth = Math.max(p.videoWidth, el.videoWidth || 0);
          p.videoHeight = Math.max(p.videoHeight, el.videoHeight || 0);
          p.frames = Math.max(p.frames, Number(el.dataset.frames || 0));
          const q = el.getVideoPlaybackQuality && el.getVideoPlaybackQuality();
          if (q) p.playbackFrames = Math.max(p.playbackFrames, q.totalVideoFrames);
          if (!p.reported && p.frames > 0 && p.videoWidth > 0) {
            p.reported = true;
            window.humReport("peer_video", { stream: v.id, width: p.videoWidth, height: p.videoHeight });
          }
        }
        if (inbound) {
          p.framesDecoded = Math.max(p.framesDecoded, inbound.framesDecoded || 0);
          p.codec = (stats.find((e) => e.id === inbound.codecId) || {}).mimeType || p.codec;
        }
      }
      const out = stats.filter((e) => e.type === "outbound-rtp" && e.kind === "video");
      if (out.length) {
        rec.sent = {};
        for (const o of out) rec.sent[o.rid || "-"] = { framesEncoded: o.framesEncoded || 0, width: o.frameWidth || 0, height: o.frameHeight || 0, active: o.active };
      }
      if (window.humWeb.sfu) rec.layers = window.humWeb.sfu.layers.map((l) => [...l]);
    }, 200);
    setInterval(() => {
      for (const [user, r] of window.humWeb.remote) {
        if (rec.peers[user]) continue;
        const p = (rec.peers[user] = { chunks: [], firstLoudMs: null, left: false });
        const node = new AudioWorkletNode(ctx, "rec");
        node.port.onmessage = (e) => {
          p.chunks.push(e.data);
          if (p.firstLoudMs === null) {
            let s = 0;
            for (const x of e.data) s += x * x;
            if (Math.sqrt(s / e.data.length) > 0.01) {
              p.firstLoudMs = performance.now();
              window.humReport("peer_audio", { user });
            }
          }
        };
        const mute = ctx.createGain();
        mute.gain.value = 0;
        ctx.createMediaStreamSource(r.stream).connect(node).connect(mute).connect(ctx.destination);
        p.node = node;
      }
      for (const [user, p] of Object.entries(rec.peers)) {
        const mp = window.humWeb.mesh && window.humWeb.mesh.peers.get(user);
        if (mp) {
          p.states = [...mp.states];
          p.offerer = mp.offerer;
        } else if (window.humWeb.sfu) {
          // On the SFU: the one connection's states.
          p.states = [...window.humWeb.sfu.states];
        }
        const r = window.humWeb.remote.get(user);
        if (r) p.via = r.via;
        if (!p.left && !window.humWeb.remote.has(user)) {
          p.left = true;
          p.node.port.onmessage = null;
        }
      }
    }, 20);
  }, WORKLET);
  await page.exposeFunction("humReport", (kind, data) => report(kind, { ...data, ms: Date.now() - opened }));

  await page.getByTestId(`join-${args.channel}`).click();
  await page.getByTestId(`leave-${args.channel}`).waitFor({ timeout: 30_000 });
  report("joined", { user: me, ms: Date.now() - opened });
  if (args.camera) {
    // The camera button, as a person turns it on; the self-view plays on my tile.
    await page.getByTestId("camera").click();
    await page.locator('[data-testid="camera"][aria-pressed="true"]').waitFor({ timeout: 30_000 });
    await page.locator('[data-testid="video-self"]').waitFor({ timeout: 30_000 });
    report("camera", { ms: Date.now() - opened });
  }

  const minPeers = Number(args["min-peers"]);
  const deadline = Date.now() + Number(args["max-duration"]) * 1000;
  await page.waitForFunction(
    (n) => {
      const peers = Object.values(window.humRec.peers);
      return peers.length >= n && peers.every((p) => p.left);
    },
    minPeers,
    { timeout: Math.max(1, deadline - Date.now()), polling: 100 },
  );
  // The UI shows the peer gone and me still in the channel; then leave by clicking.
  await page.getByTestId(`leave-${args.channel}`).click();
  await page.getByTestId(`join-${args.channel}`).waitFor({ timeout: 10_000 });

  const result = await page.evaluate(() => {
    const rec = window.humRec;
    const peers = {};
    for (const [user, p] of Object.entries(rec.peers)) {
      const n = p.chunks.reduce((a, c) => a + c.length, 0);
      const pcm = new Int16Array(n);
      let i = 0;
      for (const c of p.chunks) for (const s of c) pcm[i++] = Math.max(-32768, Math.min(32767, Math.round(s * 32767)));
      const bytes = new Uint8Array(pcm.buffer);
      let bin = "";
      for (let k = 0; k < bytes.length; k += 0x8000) bin += String.fromCharCode.apply(null, bytes.subarray(k, k + 0x8000));
      peers[user] = { samples: n, firstAudioAfterMs: p.firstLoudMs === null ? null : p.firstLoudMs - rec.t0, pcm16: btoa(bin), states: p.states, offerer: p.offerer, via: p.via };
    }
    const video = {};
    for (const [id, v] of Object.entries(rec.video)) video[id] = { ...v, reported: undefined };
    return { user: window.humWeb.status.user_id, sampleRate: rec.ctx.sampleRate, peers, video, sent: rec.sent || null, layers: rec.layers || [] };
  });
  for (const [user, peer] of Object.entries(result.peers)) {
    writeFileSync(join(args.out, `from-${user}.wav`), wav(Buffer.from(peer.pcm16, "base64"), result.sampleRate));
    delete peer.pcm16;
  }
  result.totalMs = Date.now() - t0;
  writeFileSync(join(args.out, "result.json"), JSON.stringify(result, null, 2));
  report("done", { ms: Date.now() - opened });
} catch (e) {
  process.stderr.write(`web_client.mjs: the page failed: ${e.stack || e}\n`);
  exitCode = 1;
} finally {
  if (browser) await browser.close().catch(() => {});
}
process.exit(exitCode);

/** A mono 16-bit PCM WAV file around raw little-endian samples. */
function wav(pcm, rate) {
  const h = Buffer.alloc(44);
  h.write("RIFF", 0);
  h.writeUInt32LE(36 + pcm.length, 4);
  h.write("WAVEfmt ", 8);
  h.writeUInt32LE(16, 16);
  h.writeUInt16LE(1, 20);
  h.writeUInt16LE(1, 22);
  h.writeUInt32LE(rate, 24);
  h.writeUInt32LE(rate * 2, 28);
  h.writeUInt16LE(2, 32);
  h.writeUInt16LE(16, 34);
  h.write("data", 36);
  h.writeUInt32LE(pcm.length, 40);
  return Buffer.concat([h, pcm]);
}
