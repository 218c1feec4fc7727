import { inputLevel } from "../../lib/streams";

export { inputLevel };

const FLOOR = -70; // the meter shows -70..0 dBFS; the threshold slider spans -60..-30

/**
 * A horizontal input meter with the voice-activity threshold drawn on it. Green while the gate is
 * open (what you say is sent), grey below it. `idleNote` is shown while nothing is measured.
 */
export function LevelMeter(props: { thresholdDbfs: number; idleNote?: string; compact?: boolean }) {
  // (thresholdDbfs: where to draw the marker until a live level carries the engine's own.)
  const level = inputLevel.value;
  const pct = (db: number) => Math.max(0, Math.min(100, ((db - FLOOR) / -FLOOR) * 100));
  return (
    <div
      class={`meter ${props.compact ? "compact" : ""}`}
      data-testid="level-meter"
      data-live={level ? "true" : "false"}
      data-level={level ? String(level.rms_dbfs) : ""}
      title={level ? `Input ${level.rms_dbfs} dBFS (peak ${level.peak_dbfs})` : "Input level"}
    >
      <div
        class={`meter-fill ${level?.speaking ? "speaking" : ""}`}
        style={{ width: `${level ? pct(level.rms_dbfs) : 0}%` }}
      />
      {/* The engine's own floor for the current sensitivity once live; the setting before. */}
      <div class="meter-threshold" style={{ left: `${pct(level?.threshold_dbfs ?? props.thresholdDbfs)}%` }} />
      {!level && props.idleNote && <span class="meter-note">{props.idleNote}</span>}
    </div>
  );
}
