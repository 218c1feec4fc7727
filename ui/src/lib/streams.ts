// The backend's high-rate streams (ipc::Channel, not events), opened once for the app's life.
import { signal } from "@preact/signals";
import { Channel } from "@tauri-apps/api/core";
import { commands, type LevelSample, type PeerStatsView } from "./bindings";

/** The latest input level (null until a call or the microphone monitor sends one). */
export const inputLevel = signal<LevelSample | null>(null);

/** The latest link statistics per peer (public key -> stats), from calls and channels. */
export const peerStats = signal<Record<string, PeerStatsView>>({});

let opened = false;

/** Subscribes to the level and stats streams (once; later calls do nothing). */
export async function openStreams(): Promise<void> {
  if (opened) return;
  opened = true;
  const levels = new Channel<LevelSample>((l) => (inputLevel.value = l.live ? l : null));
  const stats = new Channel<PeerStatsView>((s) => (peerStats.value = { ...peerStats.value, [s.user_id]: s }));
  await Promise.all([commands.levelsSubscribe(levels), commands.statsSubscribe(stats)]);
}

/** For tests: forget the subscriptions and values. */
export function resetStreams() {
  opened = false;
  inputLevel.value = null;
  peerStats.value = {};
}

/** "RTT 42 ms · loss 1.3% · jitter 3 ms" for a tooltip. */
export function describeStats(s: PeerStatsView): string {
  const rtt = s.rtt_ms === null ? "RTT measuring…" : `RTT ${s.rtt_ms} ms`;
  return `${rtt} · loss ${s.loss_pct}% · jitter ${s.jitter_ms} ms · buffer ${s.buffer_ms} ms`;
}
