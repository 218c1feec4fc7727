import { useSignal } from "@preact/signals";
import type { LiveSource } from "../../lib/bindings";
import { Dialog } from "../layout/Dialog";
import { goLive, liveBusy, liveError } from "./store";

const SOURCES: { id: LiveSource; label: string }[] = [
  { id: "camera", label: "Camera" },
  { id: "screen", label: "Screen" },
  { id: "pattern", label: "Test pattern" },
  { id: "file", label: "Video file (.y4m)" },
];

/**
 * Go Live: what to send (camera, screen, the test pattern or a Y4M file, plus the microphone),
 * a title, and whether the relay keeps a recording (viewers are told). Closes once live; the
 * backend's refusal (no `stream` permission, no camera) stays in the dialog.
 */
export function GoLiveDialog(props: { channel: number; channelName: string; onClose: () => void }) {
  const source = useSignal<LiveSource>("camera");
  const title = useSignal("");
  const file = useSignal("");
  const microphone = useSignal(true);
  const record = useSignal(false);
  const submit = async (e: Event) => {
    e.preventDefault();
    const ok = await goLive({
      channel: props.channel,
      title: title.value.trim() || `Live in ${props.channelName}`,
      source: source.value,
      file: source.value === "file" ? file.value : null,
      microphone: microphone.value,
      record: record.value,
    });
    if (ok) props.onClose();
  };
  return (
    <Dialog title={`Go live in ${props.channelName}`} testId="go-live-dialog" onClose={props.onClose}>
      <form class="go-live" onSubmit={submit}>
        <label class="field">
          <span>Title</span>
          <input
            data-testid="go-live-title"
            value={title.value}
            maxLength={100}
            placeholder={`Live in ${props.channelName}`}
            onInput={(e) => (title.value = e.currentTarget.value)}
          />
        </label>
        <fieldset class="field">
          <legend>Picture</legend>
          {SOURCES.map((s) => (
            <label class="radio" key={s.id}>
              <input
                type="radio"
                name="live-source"
                data-testid={`go-live-source-${s.id}`}
                checked={source.value === s.id}
                onChange={() => (source.value = s.id)}
              />
              {s.label}
            </label>
          ))}
        </fieldset>
        {source.value === "file" && (
          <label class="field">
            <span>File</span>
            <input
              data-testid="go-live-file"
              value={file.value}
              placeholder="/path/to/video.y4m"
              onInput={(e) => (file.value = e.currentTarget.value)}
            />
          </label>
        )}
        <label class="check">
          <input
            type="checkbox"
            data-testid="go-live-mic"
            checked={microphone.value}
            onChange={(e) => (microphone.value = e.currentTarget.checked)}
          />
          Microphone (off: a quiet tone)
        </label>
        <label class="check">
          <input
            type="checkbox"
            data-testid="go-live-record"
            checked={record.value}
            onChange={(e) => (record.value = e.currentTarget.checked)}
          />
          Record on the server (viewers see that this stream is recorded)
        </label>
        {liveError.value && (
          <p class="error" role="alert" data-testid="go-live-error">
            {liveError.value}
          </p>
        )}
        <div class="row">
          <button type="submit" data-testid="go-live-start" disabled={liveBusy.value}>
            {liveBusy.value ? "Starting…" : "Go live"}
          </button>
        </div>
      </form>
    </Dialog>
  );
}
