// Livestreams: the live streams of each server (refetched when the backend says `live-changed`),
// and my live status (the stream I send, the one I watch: `live-status-changed` every second
// while either runs).
import { signal } from "@preact/signals";
import { useEffect } from "preact/hooks";
import { commands, events, type GoLive, type LiveLayer, type LiveStatus, type LiveStreamView } from "../../lib/bindings";
import { messageOf, unwrap } from "../../lib/api";
import { openVideo } from "../../lib/video";

export const IDLE: LiveStatus = { streaming: null, watching: null, notice: null };

/** Live streams by server id. */
export const liveStreams = signal<Record<number, LiveStreamView[]>>({});
export const liveStatus = signal<LiveStatus>(IDLE);
export const liveError = signal<string | null>(null);
export const liveBusy = signal(false);

/** The live streams of one channel. */
export function streamsIn(server: number, channel: number): LiveStreamView[] {
  return (liveStreams.value[server] ?? []).filter((s) => s.channel === channel);
}

export async function refreshLive(server: number) {
  try {
    const list = await unwrap(commands.liveList(server));
    liveStreams.value = { ...liveStreams.value, [server]: list };
  } catch {
    // Not connected yet: the list stays as it was; the voice view shows the relay's state.
  }
}

async function act(f: () => Promise<LiveStatus | null>) {
  liveBusy.value = true;
  liveError.value = null;
  try {
    const s = await f();
    if (s) liveStatus.value = s;
    return true;
  } catch (e) {
    liveError.value = messageOf(e);
    return false;
  } finally {
    liveBusy.value = false;
  }
}

export const goLive = (req: GoLive) => act(() => unwrap(commands.liveStart(req)));
export const stopLive = () => act(async () => (await unwrap(commands.liveStop()), unwrap(commands.liveStatus())));
export const watchStream = (id: number) =>
  act(async () => {
    await openVideo();
    return unwrap(commands.liveWatch(id));
  });
export const leaveStream = () => act(async () => (await unwrap(commands.liveLeave()), unwrap(commands.liveStatus())));
/** The player's quality menu: a layer, or `null` for auto. */
export const setQuality = (layer: LiveLayer | null) => act(() => unwrap(commands.liveQuality(layer)));
export async function dismissNotice() {
  await commands.liveDismiss();
  liveStatus.value = { ...liveStatus.value, notice: null };
}

let users = 0;
let stop: (() => void) | null = null;
/** Servers whose lists are kept fresh (the one shown). */
const watched = new Set<number>();

function subscribe(): () => void {
  const unlisten: (() => void)[] = [];
  let closed = false;
  const keep = (u: () => void) => (closed ? u() : unlisten.push(u));
  commands
    .liveStatus()
    .then((r) => r.status === "ok" && (liveStatus.value = r.data))
    .catch(() => {});
  events.liveStatusChanged
    .listen((e) => (liveStatus.value = e.payload.status))
    .then(keep)
    .catch(() => {});
  events.liveChanged
    .listen((e) => {
      const s = e.payload.server;
      (s === null ? [...watched] : [s]).forEach(refreshLive);
    })
    .then(keep)
    .catch(() => {});
  // Viewer counts change without an event to members who do not stream: refetch now and then.
  const timer = setInterval(() => watched.forEach(refreshLive), 5000);
  return () => {
    closed = true;
    clearInterval(timer);
    unlisten.forEach((u) => u());
  };
}

/** Keeps the live lists of `server` and my live status current while mounted. */
export function useLiveSync(server: number | null) {
  useEffect(() => {
    if (users++ === 0) stop = subscribe();
    return () => {
      if (--users === 0) {
        stop?.();
        stop = null;
      }
    };
  }, []);
  useEffect(() => {
    if (server === null) return;
    watched.add(server);
    refreshLive(server);
    return () => {
      watched.delete(server);
    };
  }, [server]);
}

/** For tests. */
export function resetLiveStore() {
  liveStreams.value = {};
  liveStatus.value = IDLE;
  liveError.value = null;
  liveBusy.value = false;
  watched.clear();
}
