import { signal } from "@preact/signals";
import type { LevelSample } from "../../lib/bindings";

/** The latest input level, fed by the level channel while a call runs (null: no input yet). */
export const inputLevel = signal<LevelSample | null>(null);

const FLOOR = -70; // the meter shows -70..0 dBFS; the threshold slider spans -60..-30

/** A horizontal meter with the voice-activity threshold drawn on it. */
export function LevelMeter(props: { thresholdDbfs: number }) {
  const level = inputLevel.value;
  const pct = (db: number) => Math.max(0, Math.min(100, ((db - FLOOR) / -FLOOR) * 100));
  return (
    <div class="meter" data-testid="level-meter" title="Input level">
      <div
        class={`meter-fill ${level?.speaking ? "speaking" : ""}`}
        style={{ width: `${level ? pct(level.rms_dbfs) : 0}%` }}
      />
      <div class="meter-threshold" style={{ left: `${pct(props.thresholdDbfs)}%` }} />
      {!level && <span class="meter-note">Live while you are in a voice channel</span>}
    </div>
  );
}
