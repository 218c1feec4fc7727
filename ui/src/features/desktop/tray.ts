// The tray icon's half in the UI: it shows what the voice store knows (channel, muted, deafened,
// relaying) and its clicks run the same actions as the control bar and the bandwidth panel.
import { effect } from "@preact/signals";
import { useEffect } from "preact/hooks";
import { commands, events, type RelayContribution, type TrayAction } from "../../lib/bindings";
import { unwrap } from "../../lib/api";
import { myVoice, servers, setMyVoice, voiceAct } from "../voice/store";
import { signal } from "@preact/signals";

/** Relaying for viewers is on (from the saved bandwidth settings). */
export const relayOn = signal(false);
/** The level to go back to when the tray turns relaying on again. */
let relayBefore: RelayContribution = { level: "low" };

function channelName(id: number | null): string | null {
  if (id === null) return null;
  for (const s of servers.value ?? []) {
    const c = s.channels.find((ch) => ch.id === id);
    if (c) return c.name;
  }
  return "a voice channel";
}

async function loadRelay() {
  const s = await unwrap(commands.settingsGet());
  relayOn.value = s.bandwidth.relay.level !== "off";
  if (relayOn.value) relayBefore = s.bandwidth.relay;
}

/** Turns relaying off, or back on at the level it had. */
export async function toggleRelay() {
  const s = await unwrap(commands.settingsGet());
  const on = s.bandwidth.relay.level !== "off";
  if (on) relayBefore = s.bandwidth.relay;
  const relay: RelayContribution = on ? { level: "off" } : relayBefore;
  await unwrap(commands.bandwidthSave({ ...s.bandwidth, relay }));
  relayOn.value = !on;
}

export async function runTrayAction(action: TrayAction) {
  const v = myVoice.value;
  switch (action) {
    case "mute":
      return setMyVoice(!v.muted, v.deafened && v.muted ? false : v.deafened);
    case "deafen":
      return setMyVoice(v.muted, !v.deafened);
    case "leave":
      return voiceAct(() => unwrap(commands.channelLeave()));
    case "relay":
      return toggleRelay();
  }
}

/** Keeps the tray in step with the app while mounted (once, in the shell). */
export function useTray() {
  useEffect(() => {
    loadRelay().catch(() => {});
    const stop = effect(() => {
      const v = myVoice.value;
      commands
        .traySync({ channel: channelName(v.channel), muted: v.muted, deafened: v.deafened, relay_on: relayOn.value })
        .catch(() => {});
    });
    let unlisten: (() => void) | undefined;
    let closed = false;
    events.trayClicked
      .listen((e) => {
        runTrayAction(e.payload.action).catch(() => {});
      })
      .then((u) => (closed ? u() : (unlisten = u)))
      .catch(() => {});
    return () => {
      closed = true;
      stop();
      unlisten?.();
    };
  }, []);
}
