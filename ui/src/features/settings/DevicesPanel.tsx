import { useSignal } from "@preact/signals";
import { useEffect } from "preact/hooks";
import {
  commands,
  type DeviceView,
  type VideoQuality,
  type VideoSettings,
  type VideoSourceView,
  type VoiceSettings,
} from "../../lib/bindings";
import { camera } from "../../lib/video";
import { messageOf, unwrap } from "../../lib/api";

type TestState = { device: string; state: "playing" | "ok" | "error"; text: string };

/** Microphone and speaker choice from cpal (via hum-media), a test sound per speaker; a missing
 *  device is said plainly. */
export function DevicesPanel(props: { voice: VoiceSettings; onChange: (v: VoiceSettings) => void }) {
  const devices = useSignal<DeviceView[] | null>(null);
  const error = useSignal<string | null>(null);
  const test = useSignal<TestState | null>(null);
  const video = useSignal<VideoSettings | null>(null);
  const sources = useSignal<VideoSourceView[]>([]);
  const videoStatus = useSignal<string | null>(null);
  useEffect(() => {
    unwrap(commands.devicesList())
      .then((d) => (devices.value = d))
      .catch((e) => (error.value = messageOf(e)));
    commands.videoSettingsGet().then((v) => (video.value = v)).catch(() => {});
    unwrap(commands.videoSourcesList())
      .then((s) => (sources.value = s))
      .catch(() => {});
  }, []);

  async function setVideo(change: Partial<VideoSettings>) {
    if (!video.value) return;
    try {
      video.value = await unwrap(commands.videoSettingsSet({ ...video.value, ...change }));
      videoStatus.value = camera.value ? "Saved. Turn the camera off and on to switch." : "Saved.";
    } catch (e) {
      videoStatus.value = messageOf(e);
    }
  }

  async function testSound(id: string | null) {
    const key = id ?? "";
    test.value = { device: key, state: "playing", text: "Playing a test sound…" };
    try {
      await unwrap(commands.deviceTestSound(id));
      test.value = { device: key, state: "ok", text: "Played. Did you hear a chime?" };
    } catch (e) {
      test.value = { device: key, state: "error", text: messageOf(e) };
    }
  }

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
        {props.voice[kind] && !list.some((x) => x.id === props.voice[kind]) && (
          <option value={props.voice[kind] ?? ""}>{props.voice[kind]} (not connected)</option>
        )}
      </select>
    </label>
  );
  const missing = (kind: "input_device" | "output_device", list: DeviceView[]) =>
    d !== null && props.voice[kind] !== null && !list.some((x) => x.id === props.voice[kind]);
  const testRow = (id: string | null, name: string) => {
    const key = id ?? "";
    const t = test.value?.device === key ? test.value : null;
    return (
      <li key={key} data-testid={`speaker-${key || "default"}`}>
        <div class="device-row">
          <span style={{ flex: 1 }}>{name}</span>
          <button
            class="secondary"
            data-testid={`test-sound-${key || "default"}`}
            disabled={test.value?.state === "playing"}
            onClick={() => testSound(id)}
          >
            Test sound
          </button>
        </div>
        {t && (
          <p
            class={t.state === "error" ? "error" : "muted"}
            data-testid={`test-result-${key || "default"}`}
            role={t.state === "error" ? "alert" : undefined}
          >
            {t.text}
          </p>
        )}
      </li>
    );
  };
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
      {missing("input_device", inputs) && (
        <p class="warning" data-testid="missing-microphone">
          The microphone you chose ({props.voice.input_device}) is not connected. Plug it in or pick another.
        </p>
      )}
      {missing("output_device", outputs) && (
        <p class="warning" data-testid="missing-speaker">
          The speaker you chose ({props.voice.output_device}) is not connected. Plug it in or pick another.
        </p>
      )}
      {select("input_device", inputs, "Microphone")}
      {select("output_device", outputs, "Speaker")}
      <ul class="device-list">
        {testRow(null, "System default speaker")}
        {outputs.map((x) => testRow(x.id, x.name))}
      </ul>
      {video.value && (
        <>
          <label>
            Camera
            <select
              data-testid="video-source"
              value={video.value.source}
              onChange={(e) => setVideo({ source: e.currentTarget.value })}
            >
              <option value="camera">First camera found</option>
              {sources.value.map((x) => (
                <option value={x.id} key={x.id}>
                  {x.name}
                </option>
              ))}
              {!["camera", ...sources.value.map((x) => x.id)].includes(video.value.source) && (
                <option value={video.value.source}>{video.value.source} (not connected)</option>
              )}
            </select>
          </label>
          <label>
            Camera quality
            <select
              data-testid="video-quality"
              value={video.value.quality}
              onChange={(e) => setVideo({ quality: e.currentTarget.value as VideoQuality })}
            >
              <option value="720p30">720p, 30 fps (1.5 Mbit/s at most)</option>
              <option value="360p30">360p, 30 fps (500 kbit/s at most): slow uploads, older computers</option>
            </select>
          </label>
          {sources.value.length > 0 && !sources.value.some((x) => x.id.startsWith("camera")) && (
            <p class="muted" data-testid="no-camera">
              No camera found. The test pattern shows what others would see.
            </p>
          )}
          {videoStatus.value && (
            <p class="muted" data-testid="video-status">
              {videoStatus.value}
            </p>
          )}
        </>
      )}
    </section>
  );
}
