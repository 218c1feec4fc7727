// Servers, rosters and my voice state, shared by the server rail, the channel list, the stage and
// the control bar. The relay is the one source of truth: every nudge refetches.
import { signal } from "@preact/signals";
import { useEffect } from "preact/hooks";
import { commands, events, type MyVoice, type ServerView } from "../../lib/bindings";
import { messageOf, unwrap } from "../../lib/api";

export const NOT_IN_VOICE: MyVoice = { channel: null, muted: false, deafened: false, audio_notice: null };

export const servers = signal<ServerView[] | null>(null);
export const myVoice = signal<MyVoice>(NOT_IN_VOICE);
export const voiceError = signal<string | null>(null);
export const audioNotice = signal<string | null>(null);
export const selfSpeaking = signal(false);
/** Why a server just left my list (kicked, or deleted by its owner), until dismissed. */
export const serverNotice = signal<string | null>(null);
/** The server shown in the channel list (null: the first one). */
export const selectedServer = signal<number | null>(null);

export async function refreshVoice() {
  try {
    servers.value = await unwrap(commands.serversList());
    const me = await unwrap(commands.myVoice());
    // A notice belongs to the channel it came in (a device lost, taken out of it): another
    // channel, or none, starts without it (the backend's own `audio_notice` still shows).
    if (me.channel !== myVoice.value.channel) audioNotice.value = null;
    myVoice.value = me;
    voiceError.value = null;
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
  servers.value = null;
  myVoice.value = NOT_IN_VOICE;
  voiceError.value = null;
  audioNotice.value = null;
  serverNotice.value = null;
  selfSpeaking.value = false;
  selectedServer.value = null;
}
