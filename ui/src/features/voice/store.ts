// Servers, rosters and my voice state, shared by the server rail, the channel list, the stage and
// the control bar. The relay is the one source of truth: every nudge refetches.
import { effect, signal } from "@preact/signals";
import { useEffect } from "preact/hooks";
import { commands, events, type MyVoice, type ServerView } from "../../lib/bindings";
import { messageOf, unwrap } from "../../lib/api";

export const NOT_IN_VOICE: MyVoice = { channel: null, muted: false, deafened: false, muted_by_channel: false, audio_notice: null };

export const servers = signal<ServerView[] | null>(null);
export const myVoice = signal<MyVoice>(NOT_IN_VOICE);
export const voiceError = signal<string | null>(null);
export const audioNotice = signal<string | null>(null);
export const selfSpeaking = signal(false);
/** Why a server just left my list (kicked, or deleted by its owner), until dismissed. */
export const serverNotice = signal<string | null>(null);
/** The server shown in the channel list (null: the first one). */
export const selectedServer = signal<number | null>(null);

/** The server the backend was last told is on screen (`servers_watch`); undefined: not yet. */
let watched: number | null | undefined;

/**
 * Tells the backend which server is on screen when that changed: the relay then sends rosters
 * and member changes only for it and my own channel, and `servers_list` fetches only it (and my
 * voice channel's server) in full. True if it told.
 */
async function watchShown(): Promise<boolean> {
  const id = currentServer()?.id ?? null;
  if (id === watched) return false;
  await unwrap(commands.serversWatch(id));
  watched = id;
  return true;
}

/** The refresh in flight, and whether another was asked for meanwhile. */
let refreshing: Promise<void> | null = null;
let refreshAgain = false;

/**
 * Fetches servers and my voice state. Refreshes never overlap (a slow one could overwrite a
 * newer one's answer): one asked for while another runs runs after it, once.
 */
export function refreshVoice(): Promise<void> {
  if (refreshing) {
    refreshAgain = true;
    return refreshing;
  }
  refreshing = (async () => {
    do {
      refreshAgain = false;
      await refreshOnce();
    } while (refreshAgain);
    refreshing = null;
  })();
  return refreshing;
}

async function refreshOnce() {
  try {
    servers.value = await unwrap(commands.serversList());
    const me = await unwrap(commands.myVoice());
    // A notice belongs to the channel it came in (a device lost, taken out of it): another
    // channel, or none, starts without it (the backend's own `audio_notice` still shows).
    if (me.channel !== myVoice.value.channel) audioNotice.value = null;
    myVoice.value = me;
    voiceError.value = null;
    // Another server on screen: watch it, then fetch again (its channels).
    if (await watchShown()) refreshAgain = true;
  } catch (e) {
    voiceError.value = messageOf(e);
  }
}

/** Runs an action; its error shows in the voice view, then everything is refetched. */
export async function voiceAct(f: () => Promise<unknown>) {
  try {
    voiceError.value = null;
    await f();
    await refreshVoice();
  } catch (e) {
    voiceError.value = messageOf(e);
  }
}

export async function setMyVoice(muted: boolean, deafened: boolean) {
  await voiceAct(async () => (myVoice.value = await unwrap(commands.voiceStateSet(muted, deafened))));
}

/** The selected server, or the first. */
export function currentServer(): ServerView | null {
  const list = servers.value ?? [];
  return list.find((s) => s.id === selectedServer.value) ?? list[0] ?? null;
}

let users = 0;
let stop: (() => void) | null = null;

function subscribe(): () => void {
  refreshVoice();
  // The backend nudges on every roster/channel change; coalesce bursts (speaking toggles).
  let timer: ReturnType<typeof setTimeout> | undefined;
  const unlisten: (() => void)[] = [];
  let closed = false;
  const keep = (u: () => void) => (closed ? u() : unlisten.push(u));
  const soon = () => {
    clearTimeout(timer);
    timer = setTimeout(refreshVoice, 50);
  };
  events.serversChanged.listen(soon).then(keep).catch(() => {});
  // Logged in (again, or a new relay client after the relay address changed, which watches
  // nothing yet): tell it which server is on screen.
  events.relayStatusChanged
    .listen((e) => {
      if (e.payload.status.state !== "connected") return;
      watched = undefined;
      soon();
    })
    .then(keep)
    .catch(() => {});
  // Another server on screen: watch it and fetch its channels.
  let first = true;
  unlisten.push(
    effect(() => {
      void selectedServer.value;
      if (first) first = false;
      else soon();
    }),
  );
  events.serverGone
    .listen((e) => {
      const gone = servers.value?.find((s) => s.id === e.payload.server);
      const name = gone?.name ?? "A server";
      // My own delete or leave needs no telling.
      if (e.payload.reason === "kicked") serverNotice.value = `You were removed from ${name} (kicked or banned by an admin).`;
      else if (e.payload.reason === "deleted" && gone?.role !== "owner") serverNotice.value = `${name} was deleted by its owner.`;
      soon();
    })
    .then(keep)
    .catch(() => {});
  events.audioNotice
    .listen((e) => (audioNotice.value = e.payload.message))
    .then(keep)
    .catch(() => {});
  events.selfSpeaking
    .listen((e) => (selfSpeaking.value = e.payload.speaking))
    .then(keep)
    .catch(() => {});
  return () => {
    closed = true;
    clearTimeout(timer);
    unlisten.forEach((u) => u());
  };
}

/** Keeps the store current while any component using it is mounted (one subscription). */
export function useVoiceSync() {
  useEffect(() => {
    if (users++ === 0) stop = subscribe();
    return () => {
      if (--users === 0) {
        stop?.();
        stop = null;
      }
    };
  }, []);
}

/** For tests: forget everything. */
export function resetVoiceStore() {
  watched = undefined;
  refreshAgain = false;
  servers.value = null;
  myVoice.value = NOT_IN_VOICE;
  voiceError.value = null;
  audioNotice.value = null;
  serverNotice.value = null;
  selfSpeaking.value = false;
  selectedServer.value = null;
}
