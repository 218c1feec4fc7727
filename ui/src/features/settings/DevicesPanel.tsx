import { useSignal } from "@preact/signals";
import { useEffect } from "preact/hooks";
import { commands, type DeviceView, type VoiceSettings } from "../../lib/bindings";
import { messageOf, unwrap } from "../../lib/api";

/** Microphone and speaker choice from cpal (via hum-media); a missing device is said plainly. */
export function DevicesPanel(props: { voice: VoiceSettings; onChange: (v: VoiceSettings) => void }) {
  const devices = useSignal<DeviceView[] | null>(null);
  const error = useSignal<string | null>(null);
  useEffect(() => {
    unwrap(commands.devicesList())
      .then((d) => (devices.value = d))
      .catch((e) => (error.value = messageOf(e)));
  }, []);
  const d = devices.value;
  const inputs = d?.filter((x) => x.input) ?? [];
  const outputs = d?.filter((x) => x.output) ?? [];
  const select = (kind: "input_device" | "output_device", list: DeviceView[], label: string) => (
    <label>
      {label}
      <select
        data-testid={kind}
        value={props.voice[kind] ?? ""}
        onChange={(e) => props.onChange({ ...props.voice, [kind]: e.currentTarget.value || null })}
      >
        <option value="">System default</option>
        {list.map((x) => (
          <option value={x.id} key={x.id}>
            {x.name}
          </option>
        ))}
      </select>
    </label>
  );
  return (
    <section class="card" data-testid="devices-panel">
      <h2>Devices</h2>
      {error.value && <p class="error">{error.value}</p>}
      {d && inputs.length === 0 && (
        <p class="warning" data-testid="no-microphone">
          No microphone found. You can still join voice channels and listen; others will hear silence.
        </p>
      )}
      {d && outputs.length === 0 && (
        <p class="warning" data-testid="no-speaker">
          No speaker or headset found. Plug one in to hear others.
        </p>
      )}
      {select("input_device", inputs, "Microphone")}
      {select("output_device", outputs, "Speaker")}
    </section>
  );
}
