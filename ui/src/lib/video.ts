// Video frames from the backend: one ipc::Channel carries every stream as raw bytes
// (src-tauri/src/channels.rs `VideoPacket`); frames are routed by stream id to whoever shows that
// stream (a VideoTile). My camera's on/off state lives here too; which streams are live, and the
// browser's own decoded tracks, in ./videoStreams.ts.
import { signal } from "@preact/signals";
import { Channel } from "@tauri-apps/api/core";
import { commands, type CameraView, type VideoPacket } from "./bindings";
import { messageOf, unwrap } from "./api";
import { endStream, noteFrame, resetStreams } from "./videoStreams";

export { activeStreams, endedStreams, mediaTracks, pruneIdle, STREAM_IDLE_MS } from "./videoStreams";

export const VIDEO_WIRE_VERSION = 1;
export const VIDEO_HEADER_LEN = 24;

/** One encoded frame as the backend sent it. */
export type VideoFrameMsg = {
  streamId: string;
  keyframe: boolean;
  /** Frames before this one were lost (a remote track): wait for a keyframe. */
  afterLoss: boolean;
  /** No frame: the sender turned this stream off (their camera went off). */
  ended: boolean;
  width: number;
  height: number;
  /** Media time since the stream started, µs (WebCodecs' timestamp). */
  timestampUs: number;
  /** Capture time, Unix ms (0 = unknown). */
  captureUnixMs: number;
  /** The VP8 frame (a view into the message's buffer). */
  data: Uint8Array;
};

const utf8 = new TextDecoder();

/** Reads a VideoPacket; null for anything malformed or of another version (never throws). */
export function parseVideoPacket(buf: ArrayBuffer): VideoFrameMsg | null {
  if (!(buf instanceof ArrayBuffer) || buf.byteLength < VIDEO_HEADER_LEN) return null;
  const v = new DataView(buf);
  if (v.getUint8(0) !== VIDEO_WIRE_VERSION) return null;
  const idLen = v.getUint8(2);
  if (idLen === 0 || buf.byteLength < VIDEO_HEADER_LEN + idLen) return null;
  return {
    keyframe: (v.getUint8(1) & 1) === 1,
    afterLoss: (v.getUint8(1) & 2) === 2,
    ended: (v.getUint8(1) & 4) === 4,
    width: v.getUint16(4, true),
    height: v.getUint16(6, true),
    timestampUs: Number(v.getBigUint64(8, true)),
    captureUnixMs: Number(v.getBigUint64(16, true)),
    streamId: utf8.decode(new Uint8Array(buf, VIDEO_HEADER_LEN, idLen)),
    data: new Uint8Array(buf, VIDEO_HEADER_LEN + idLen),
  };
}

type Listener = (f: VideoFrameMsg) => void;
const listeners = new Map<string, Set<Listener>>();

/** Routes one message to the listeners of its stream. Raw bytes arrive as an ArrayBuffer; the
 *  comparison path (HUM_VIDEO_IPC=json, docs/app.md) sends a JSON array of numbers. */
export function dispatchVideo(msg: ArrayBuffer | number[]) {
  const buf = Array.isArray(msg) ? new Uint8Array(msg).buffer : msg;
  const f = parseVideoPacket(buf);
  if (!f) return;
  if (f.ended) {
    endStream(f.streamId);
    return;
  }
  noteFrame(f.streamId);
  listeners.get(f.streamId)?.forEach((l) => l(f));
}

/** The stream id of someone's camera in a call (src-tauri `remote_stream_id`). */
export function cameraStreamOf(userId: string): string {
  return `${userId}/camera`;
}

/** How big a remote camera is shown, which decides the layer its sender sends us (src-tauri
 *  `TileQuality`): the spotlight `high`, thumbnails `low`, not on screen `off`. */
export type TileQuality = "high" | "low" | "off";

/** Past this many camera tiles in a grid without a spotlight, they are thumbnails. */
export const FULL_TILES = 2;

/**
 * The layer to ask of each remote member (by user id): the spotlight high and everyone else on
 * the page low; with no spotlight, high while at most FULL_TILES cameras share the grid (the
 * tiles are big), else low; members not on the page off.
 */
export function layerPlan(
  remotes: string[],
  shown: ReadonlySet<string>,
  spotlight: string | null,
  cameras: number,
): Map<string, TileQuality> {
  const plan = new Map<string, TileQuality>();
  for (const id of remotes) {
    let q: TileQuality;
    if (id === spotlight) q = "high";
    else if (!shown.has(id)) q = "off";
    else if (spotlight === null && cameras <= FULL_TILES) q = "high";
    else q = "low";
    plan.set(id, q);
  }
  return plan;
}

/** What each sender was last asked for (by user id), so a change is asked once. */
const asked = new Map<string, TileQuality>();

/** Asks each sender in `plan` for its layer if that changed; returns the users asked. */
export function askLayers(plan: Map<string, TileQuality>): string[] {
  const changed: string[] = [];
  for (const [id, q] of plan) {
    if (asked.get(id) === q) continue;
    asked.set(id, q);
    changed.push(id);
    commands.videoQualitySet(cameraStreamOf(id), q).catch(() => asked.delete(id));
  }
  return changed;
}

/** Forgets what was asked (a new channel, or the channel moved between mesh and SFU: the
 *  senders or the relay there know nothing of it), so the next plan is asked in full. */
export function forgetLayers() {
  asked.clear();
}

/** A member pinned to the spotlight by a click on their tile (null: the speaker). */
export const pinned = signal<string | null>(null);

/** Calls `fn` with every frame of `streamId` until the returned function is called. */
export function subscribeVideo(streamId: string, fn: Listener): () => void {
  let set = listeners.get(streamId);
  if (!set) listeners.set(streamId, (set = new Set()));
  set.add(fn);
  return () => {
    set.delete(fn);
    if (set.size === 0) listeners.delete(streamId);
  };
}

let opened = false;

/** Opens the video channel (once; later calls do nothing). */
export async function openVideo(): Promise<void> {
  if (opened) return;
  opened = true;
  const ch = new Channel<VideoPacket>((m) => dispatchVideo(m as ArrayBuffer | number[]));
  await commands.videoSubscribe(ch);
}

/** My camera (null = off). */
export const camera = signal<CameraView | null>(null);
/** Why the camera did not start. */
export const cameraError = signal<string | null>(null);
export const cameraBusy = signal(false);

/** Turns my camera on or off. */
export async function setCamera(on: boolean): Promise<void> {
  cameraBusy.value = true;
  try {
    if (on) await openVideo();
    const view = await unwrap(commands.cameraSet(on));
    camera.value = view.on ? view : null;
    cameraError.value = null;
  } catch (e) {
    cameraError.value = messageOf(e);
    if (on) camera.value = null;
  } finally {
    cameraBusy.value = false;
  }
}

/** Extra streams shown as tiles for benchmarks (`video_bench_start`). */
export const benchStreams = signal<string[]>([]);

/** Starts (n > 0) or stops benchmark streams of w x h pattern video, each shown in a tile. */
export async function benchVideo(n: number, width = 640, height = 360): Promise<string[]> {
  await openVideo();
  const ids = await unwrap(commands.videoBenchStart(n, width, height));
  benchStreams.value = ids;
  return ids;
}

declare global {
  interface Window {
    __humVideoBench?: typeof benchVideo;
  }
}
if (typeof window !== "undefined") window.__humVideoBench = benchVideo;

/** For tests. */
export function resetVideo() {
  opened = false;
  listeners.clear();
  camera.value = null;
  cameraError.value = null;
  cameraBusy.value = false;
  benchStreams.value = [];
  resetStreams();
  asked.clear();
  pinned.value = null;
}
