import { useSignal } from "@preact/signals";
import { useEffect } from "preact/hooks";
import { commands, events, type TransmitMode, type VoiceSettings } from "../../lib/bindings";
import { messageOf, unwrap } from "../../lib/api";
import { LevelMeter } from "../voice/LevelMeter";
import { DevicesPanel } from "./DevicesPanel";

/** Voice controls that persist: PTT vs voice activity, the global hotkey, sensitivity, noise suppression. */
export function VoicePanel(props: { initial: VoiceSettings }) {
  const v = useSignal<VoiceSettings>(props.initial);
  const error = useSignal<string | null>(null);
  const status = useSignal<string | null>(null);
  const transmitting = useSignal(false);
  const meterError = useSignal<string | null>(null);

  // The meter is live while this panel is open: the backend monitors the microphone (or, in a
  // call, the call's capture already feeds it).
  function startMonitor() {
    unwrap(commands.inputMonitorStart())
      .then(() => (meterError.value = null))
      .catch((e) => (meterError.value = messageOf(e)));
  }
  useEffect(() => {
    startMonitor();
    return () => {
      commands.inputMonitorStop().catch(() => {});
    };
  }, []);

  useEffect(() => {
    let unlisten: (() => void) | undefined;
    events.pttChanged
      .listen((e) => (transmitting.value = e.payload.transmitting))
      .then((u) => (unlisten = u))
      .catch(() => {});
    return () => unlisten?.();
  }, []);

  async function apply(next: VoiceSettings) {
    const micChanged = next.input_device !== v.value.input_device;
    v.value = next;
    error.value = null;
    status.value = null;
    try {
      v.value = await unwrap(commands.voiceSettingsSet(next));
      status.value = "Saved.";
      if (micChanged) startMonitor();
    } catch (e) {
      error.value = messageOf(e);
    }
  }

  const s = v.value;
  const mode = (m: TransmitMode, label: string) => (
    <label class="inline">
      <input
        type="radio"
        name="transmit-mode"
        data-testid={`mode-${m}`}
        checked={s.transmit_mode === m}
        onChange={() => apply({ ...s, transmit_mode: m })}
      />
      {label}
    </label>
  );

  return (
    <>
    <DevicesPanel voice={s} onChange={apply} />
    <section class="card" data-testid="voice-panel">
      <h2>Voice</h2>
      <fieldset>
        <legend>Transmit</legend>
        {mode("voice_activity", "Voice activity")}
        {mode("push_to_talk", "Push to talk")}
        <label class="inline">
          Push-to-talk key
          <input
            data-testid="ptt-shortcut"
            value={s.ptt_shortcut}
            onChange={(e) => apply({ ...s, ptt_shortcut: e.currentTarget.value })}
          />
        </label>
        {s.transmit_mode === "push_to_talk" && (
          <p class="muted" data-testid="ptt-state">
            {transmitting.value ? "Transmitting" : `Hold ${s.ptt_shortcut} to talk, even while a game has focus.`}
          </p>
        )}
      </fieldset>
      <fieldset>
        <legend>Input sensitivity</legend>
        <div class="slider-row">
          <input
            type="range"
            min="-60"
            max="-30"
            step="1"
            data-testid="sensitivity"
            value={s.sensitivity_dbfs}
            onChange={(e) => apply({ ...s, sensitivity_dbfs: Number(e.currentTarget.value) })}
          />
          <span>{s.sensitivity_dbfs} dB</span>
        </div>
        <LevelMeter thresholdDbfs={s.sensitivity_dbfs} idleNote="Speak to see your level" />
        {meterError.value ? (
          <p class="warning" data-testid="meter-error">
            {meterError.value}
          </p>
        ) : (
          <p class="muted">Green: what you say now is sent. The marker is the sensitivity threshold.</p>
        )}
      </fieldset>
      <label class="inline">
        <input
          type="checkbox"
          data-testid="noise-suppression"
          checked={s.noise_suppression}
          onChange={(e) => apply({ ...s, noise_suppression: e.currentTarget.checked })}
        />
        Noise suppression
      </label>
      {error.value && (
        <p class="error" role="alert" data-testid="voice-error">
          {error.value}
        </p>
      )}
      {status.value && <p class="muted">{status.value}</p>}
    </section>
    </>
  );
}
