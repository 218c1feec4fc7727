// The page's own speaking indicator and level meter, and per-peer link statistics, from the
// browser's WebAudio and WebRTC stats. The decisions (dBFS, the voice-activity gate, a stats
// report -> the UI's PeerStatsView) are pure functions vitest checks.

import type { PeerStatsView } from "../lib/bindings";

/** Whole dBFS of a block's RMS (-100 = silence). */
export function dbfs(samples: ArrayLike<number>): { rms: number; peak: number } {
  let sum = 0;
  let peak = 0;
  for (let i = 0; i < samples.length; i++) {
    const v = samples[i];
    sum += v * v;
    peak = Math.max(peak, Math.abs(v));
  }
  const rms = samples.length ? Math.sqrt(sum / samples.length) : 0;
  const db = (x: number) => (x <= 0.00001 ? -100 : Math.max(-100, Math.round(20 * Math.log10(x))));
  return { rms: db(rms), peak: db(peak) };
}

/** Voice activity: on at the threshold, off after `hangMs` below it (no flicker between words). */
export class SpeakingGate {
  private lastLoudMs = -Infinity;
  speaking = false;
  constructor(
    public thresholdDbfs: number,
    private hangMs = 300,
  ) {}
  /** One reading at `nowMs`; returns whether the state changed. */
  update(rmsDbfs: number, nowMs: number, muted: boolean): boolean {
    if (!muted && rmsDbfs >= this.thresholdDbfs) this.lastLoudMs = nowMs;
    const next = !muted && nowMs - this.lastLoudMs <= this.hangMs;
    const changed = next !== this.speaking;
    this.speaking = next;
    return changed;
  }
}

type StatsEntry = Record<string, unknown> & { id: string; type: string };

const round1 = (x: number) => Math.round(x * 10) / 10;

/** One peer's RTCStatsReport (as its entries) as the UI's PeerStatsView. */
export function peerStatsView(user: string, entries: StatsEntry[]): PeerStatsView {
  const byId = new Map(entries.map((e) => [e.id, e]));
  let rtt: number | null = null;
  let lossPct: number | null = null;
  let jitter: number | null = null;
  let buffer = 0;
  let received = 0;
  for (const s of entries) {
    if (s.type === "inbound-rtp" && s.kind === "audio") {
      received = Number(s.packetsReceived ?? 0);
      const lost = Math.max(0, Number(s.packetsLost ?? 0));
      lossPct = received + lost > 0 ? round1((100 * lost) / (received + lost)) : 0;
      if (typeof s.jitter === "number") jitter = round1(s.jitter * 1000);
      const emitted = Number(s.jitterBufferEmittedCount ?? 0);
      if (emitted > 0) buffer = Math.round((1000 * Number(s.jitterBufferDelay ?? 0)) / emitted);
    }
    if (s.type === "transport" && typeof s.selectedCandidatePairId === "string") {
      const pair = byId.get(s.selectedCandidatePairId);
      if (pair && typeof pair.currentRoundTripTime === "number") rtt = round1(pair.currentRoundTripTime * 1000);
    }
  }
  if (rtt === null) {
    const pair = entries.find((s) => s.type === "candidate-pair" && s.nominated && typeof s.currentRoundTripTime === "number");
    if (pair) rtt = round1((pair.currentRoundTripTime as number) * 1000);
  }
  const quality = (lossPct ?? 0) > 5 || (rtt ?? 0) > 300 ? "poor" : (lossPct ?? 0) > 1 || (rtt ?? 0) > 150 ? "fair" : "good";
  return { user_id: user, rtt_ms: rtt, loss_pct: lossPct, jitter_ms: jitter, buffer_ms: buffer, packets_received: received, quality };
}
