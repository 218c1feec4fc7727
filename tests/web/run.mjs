#!/usr/bin/env node
// Runs the interop test page (index.html + voice.js, with ui/src/web's protocol, mesh and sfu) in headless Chromium as one participant of a
// Hum voice channel, then writes what it heard from each peer as a WAV (from-<user>.wav) and a
// summary (result.json) into --out. The caller (tests/tests/voice_chromium.rs) judges the audio.
//
// node tests/web/run.mjs --relay ws://127.0.0.1:PORT/ws --identity id.json --invite CODE
//   --channel NAME --out DIR [--play signal.wav | --tone HZ] [--duration 20] [--until-peers-left]
//   [--min-peers N] [--restart-after SECS] [--sfu [--camera [--simulcast]]] [--chromium /usr/bin/chromium]
//
// --restart-after: SECS after each connection is up, restart its ICE (re-offer with fresh
// credentials where the page offered, send `renegotiate` where it answered).
// --sfu: the channel runs on the relay's SFU (ui/src/web/sfu.ts): one connection to it instead of
// the mesh; the join fails if the relay says the channel is a mesh. --camera: also publish
// Chromium's fake camera (VP8) and count the frames decoded of each member's video; with
// --simulcast as three layers (rids q, h, f at 1280x720), following the SFU's `sfu_layers`.
//
// Progress goes to stdout as one JSON object per line ({"event": "joined", ...}); page logs and
// errors go to stderr. Exit codes: 0 ran (look at result.json), 1 the page failed, 2 usage or
// environment (Chromium or playwright-core missing).

import { createServer } from "node:http";
import { createRequire } from "node:module";
import { existsSync, readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { dirname, join, extname } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const here = dirname(fileURLToPath(import.meta.url));

function die(code, msg) {
  process.stderr.write(`run.mjs: ${msg}\n`);
  process.exit(code);
}

const { values: args } = parseArgs({
  options: {
    relay: { type: "string" },
    identity: { type: "string" },
    invite: { type: "string" },
    channel: { type: "string" },
    out: { type: "string" },
    play: { type: "string" },
    tone: { type: "string" },
    duration: { type: "string", default: "20" },
    "until-peers-left": { type: "boolean", default: false },
    "min-peers": { type: "string", default: "1" },
    chromium: { type: "string", default: process.env.HUM_CHROMIUM || "/usr/bin/chromium" },
    name: { type: "string", default: "chromium" },
    "restart-after": { type: "string" },
    sfu: { type: "boolean", default: false },
    camera: { type: "boolean", default: false },
    simulcast: { type: "boolean", default: false },
  },
});
for (const k of ["relay", "identity", "invite", "channel", "out"]) {
  if (!args[k]) die(2, `--${k} is required`);
}
if (!args.play && !args.tone) die(2, "give --play WAV or --tone HZ");
if (!existsSync(args.chromium)) {
  die(2, `Chromium not found at ${args.chromium}: install it (Debian: apt-get install chromium; scripts/setup --test does) or set HUM_CHROMIUM`);
}
let chromium;
try {
  ({ chromium } = await import("playwright-core"));
} catch (e) {
  die(2, `playwright-core is not installed: run \`npm ci\` in ${here} (${e.message})`);
}

// The page's relay connection, login and mesh are the browser client's (ui/src/web/*.ts),
// compiled here with the UI's own esbuild (ui/node_modules, `npm ci --prefix ui`).
const uiWeb = join(here, "..", "..", "ui", "src", "web");
let esbuild;
try {
  esbuild = createRequire(join(here, "..", "..", "ui", "package.json"))("esbuild");
} catch (e) {
  die(2, `esbuild (from the UI's packages) is missing: run \`npm ci --prefix ui\` (${e.message})`);
}
const shared = {};
for (const name of ["protocol", "mesh", "sfu"]) {
  const ts = readFileSync(join(uiWeb, `${name}.ts`), "utf8");
  shared[`/web/${name}.js`] = (await esbuild.transform(ts, { loader: "ts", format: "esm", target: "es2022" })).code;
}

const identity = JSON.parse(readFileSync(args.identity, "utf8"));
mkdirSync(args.out, { recursive: true });

// The page is served over http://127.0.0.1 (a secure context, so WebCrypto works).
const types = { ".html": "text/html", ".js": "text/javascript", ".wav": "audio/wav" };
const server = createServer((req, res) => {
  const path = new URL(req.url, "http://x").pathname;
  if (shared[path]) {
    res.writeHead(200, { "content-type": "text/javascript" });
    res.end(shared[path]);
    return;
  }
  let file = null;
  if (path === "/" || path === "/index.html") file = join(here, "index.html");
  else if (path === "/voice.js" || path === "/recorder-worklet.js") file = join(here, path.slice(1));
  else if (path === "/signal.wav" && args.play) file = args.play;
  if (!file) {
    res.writeHead(404).end();
    return;
  }
  res.writeHead(200, { "content-type": types[extname(file)] || "application/octet-stream" });
  res.end(readFileSync(file));
});
await new Promise((r) => server.listen(0, "127.0.0.1", r));
const origin = `http://127.0.0.1:${server.address().port}`;

let browser;
let exitCode = 0;
try {
  browser = await chromium.launch({
    executablePath: args.chromium,
    headless: true,
    timeout: 60_000,
    args: [
      "--no-sandbox",
      "--use-fake-ui-for-media-stream",
      "--use-fake-device-for-media-stream",
      "--autoplay-policy=no-user-gesture-required",
      "--disable-background-networking",
      "--disable-component-update",
      "--no-first-run",
      // Real host addresses in ICE candidates instead of mDNS names (nothing here resolves them).
      "--disable-features=WebRtcHideLocalIpsWithMdns",
      // Playwright gives every launch a fresh temporary profile (--user-data-dir) itself.
    ],
  });
  const page = await browser.newPage();
  page.on("console", (m) => process.stderr.write(`${m.text()}\n`));
  page.on("pageerror", (e) => process.stderr.write(`[page error] ${e.message}\n`));
  await page.exposeFunction("humReport", (kind, data) => {
    process.stdout.write(JSON.stringify({ event: kind, ...data }) + "\n");
  });
  await page.goto(`${origin}/index.html`);
  await page.waitForFunction(() => window.humVoice !== undefined, null, { timeout: 30_000 });
  const params = {
    relay: args.relay,
    secretKey: identity.secret_key,
    displayName: args.name,
    invite: args.invite,
    channel: args.channel,
    playUrl: args.play ? `${origin}/signal.wav` : null,
    tone: args.tone ? Number(args.tone) : null,
    duration: Number(args.duration),
    untilPeersLeft: args["until-peers-left"],
    minPeers: Number(args["min-peers"]),
    restartAfter: Number(args["restart-after"] ?? 0) || null,
    sfu: args.sfu,
    camera: args.camera,
    simulcast: args.simulcast,
  };
  const result = await page.evaluate((p) => window.humVoice.run(p, window.humReport), params);
  for (const [user, peer] of Object.entries(result.peers)) {
    const pcm = Buffer.from(peer.pcm16, "base64");
    writeFileSync(join(args.out, `from-${user}.wav`), wav(pcm, peer.sampleRate));
    delete peer.pcm16;
  }
  writeFileSync(join(args.out, "result.json"), JSON.stringify(result, null, 2));
  process.stdout.write(JSON.stringify({ event: "done", errors: result.errors }) + "\n");
} catch (e) {
  process.stderr.write(`run.mjs: the page failed: ${e.stack || e}\n`);
  exitCode = 1;
} finally {
  if (browser) await browser.close().catch(() => {});
  server.close();
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
