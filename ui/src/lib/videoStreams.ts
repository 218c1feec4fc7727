// Which video streams are live, by stream id (`self`, `<user hex>/camera`, `<user hex>/screen`,
// `bench-N`), and where a tile gets each one's pictures from. One notion for both back ends:
// on the desktop a stream is live while its encoded frames arrive on the video channel
// (./video.ts decodes them with WebCodecs); in the browser the page's own WebRTC decodes remote
// video, so the web back end hands a tile the `MediaStreamTrack` (`setMediaTrack`) and says when
// it decoded a frame (`noteFrame`, from its inbound RTP stats). No imports but signals: the web
// back end uses it without reaching the bindings.
import { signal } from "@preact/signals";

/** A remote stream (`<user hex>/camera`) with no frame for this long is shown as stopped. The
 *  sender says when its camera goes off (an `ended` packet: the tile goes at once); this timeout
 *  covers a sender that vanished without saying so. */
export const STREAM_IDLE_MS = 2000;

/** Streams whose sender said they ended (camera off), until their next frame. */
export const endedStreams = signal<ReadonlySet<string>>(new Set());

/** Streams that delivered a frame within the last STREAM_IDLE_MS, by id: which tiles show
 *  video. Updated on the first frame of a stream and when one goes idle, not on every frame. */
export const activeStreams = signal<ReadonlySet<string>>(new Set());

/** Streams the browser decodes itself, by id: a tile plays the track in a `<video>` element
 *  instead of decoding frames from the video channel (never set on the desktop). */
export const mediaTracks = signal<ReadonlyMap<string, MediaStreamTrack>>(new Map());

const lastFrame = new Map<string, number>();
let idleTimer: ReturnType<typeof setInterval> | null = null;

/** The sender turned `id` off: no tile for it from now on (not a frozen last picture). */
export function endStream(id: string) {
  lastFrame.delete(id);
  if (activeStreams.value.has(id)) activeStreams.value = new Set([...activeStreams.value].filter((s) => s !== id));
  if (!endedStreams.value.has(id)) endedStreams.value = new Set([...endedStreams.value, id]);
}

/** A frame of `id` arrived (or was decoded): it is live. */
export function noteFrame(id: string, now = Date.now()) {
  lastFrame.set(id, now);
  if (endedStreams.value.has(id)) endedStreams.value = new Set([...endedStreams.value].filter((s) => s !== id));
  if (!activeStreams.value.has(id)) {
    activeStreams.value = new Set([...activeStreams.value, id]);
    if (!idleTimer) idleTimer = setInterval(pruneIdle, 500);
  }
}

/** Drops streams idle for STREAM_IDLE_MS (exported for tests). */
export function pruneIdle(now = Date.now()) {
  const gone = [...activeStreams.value].filter((id) => now - (lastFrame.get(id) ?? 0) > STREAM_IDLE_MS);
  if (gone.length === 0) return;
  gone.forEach((id) => lastFrame.delete(id));
  activeStreams.value = new Set([...activeStreams.value].filter((id) => !gone.includes(id)));
  if (activeStreams.value.size === 0 && idleTimer) {
    clearInterval(idleTimer);
    idleTimer = null;
  }
}

/** Shows stream `id` from `track` (null: no longer; a tile then goes back to the video channel). */
export function setMediaTrack(id: string, track: MediaStreamTrack | null) {
  if ((mediaTracks.value.get(id) ?? null) === track) return;
  const next = new Map(mediaTracks.value);
  if (track) next.set(id, track);
  else next.delete(id);
  mediaTracks.value = next;
}

/** For tests. */
export function resetStreams() {
  activeStreams.value = new Set();
  endedStreams.value = new Set();
  mediaTracks.value = new Map();
  lastFrame.clear();
  if (idleTimer) clearInterval(idleTimer);
  idleTimer = null;
}
