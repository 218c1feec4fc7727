import { useSignal } from "@preact/signals";
import { useEffect } from "preact/hooks";
import type { ShareQuality, ShareTargetView, ShareTargetsView } from "../../lib/bindings";
import { messageOf } from "../../lib/api";
import { listShareTargets, shareBusy, shareError, startShare } from "../../lib/screen";
import { Dialog } from "../layout/Dialog";

/** The encodings offered (hum-media's screen profiles). */
export const SHARE_QUALITIES: { value: ShareQuality; label: string }[] = [
  { value: "720p30", label: "720p, 30 fps" },
  { value: "1080p30", label: "1080p, 30 fps" },
  { value: "1080p60", label: "1080p, 60 fps (games)" },
  { value: "text", label: "Sharp text, 5 fps" },
];

const GROUPS: { kind: string; title: string }[] = [
  { kind: "screen", title: "Screens" },
  { kind: "window", title: "Windows" },
  { kind: "test", title: "Test sources" },
];

/**
 * The share picker: every monitor and window (by name and size), the test pattern, a quality
 * choice; a click starts the share and closes the dialog. When capture is not available (no
 * display, Wayland) it says why and still offers the test pattern.
 */
export function SharePicker(props: { onClose: () => void }) {
  const list = useSignal<ShareTargetsView | null>(null);
  const failed = useSignal<string | null>(null);
  const quality = useSignal<ShareQuality>("720p30");
  useEffect(() => {
    shareError.value = null;
    listShareTargets()
      .then((l) => (list.value = l))
      .catch((e) => (failed.value = messageOf(e)));
  }, []);
  const pick = async (t: ShareTargetView) => {
    if (await startShare(t.id, t.name, quality.value)) props.onClose();
  };
  const l = list.value;
  return (
    <Dialog title="Share your screen" testId="share-picker" onClose={props.onClose}>
      <label class="share-quality">
        Quality{" "}
        <select
          data-testid="share-quality"
          value={quality.value}
          onChange={(e) => (quality.value = e.currentTarget.value as ShareQuality)}
        >
          {SHARE_QUALITIES.map((q) => (
            <option key={q.value} value={q.value}>
              {q.label}
            </option>
          ))}
        </select>
      </label>
      {failed.value && (
        <p class="error" role="alert" data-testid="share-list-error">
          {failed.value}
        </p>
      )}
      {!l && !failed.value && <p class="muted" data-testid="share-loading">Looking for screens and windows…</p>}
      {l?.unavailable && (
        <p class="notice" data-testid="share-unavailable">
          {l.unavailable}
        </p>
      )}
      {l &&
        GROUPS.map((g) => {
          const items = l.targets.filter((t) => t.kind === g.kind);
          if (items.length === 0) return null;
          return (
            <section class="share-group" key={g.kind} data-testid={`share-group-${g.kind}`}>
              <h3>{g.title}</h3>
              <ul class="share-targets">
                {items.map((t) => (
                  <li key={t.id}>
                    <button
                      class="share-target secondary"
                      data-testid={`share-target-${t.id}`}
                      disabled={shareBusy.value}
                      onClick={() => pick(t)}
                    >
                      <span class="share-name">{t.name}</span>
                      <span class="muted share-size">
                        {t.width}×{t.height}
                      </span>
                    </button>
                  </li>
                ))}
              </ul>
            </section>
          );
        })}
      {shareError.value && (
        <p class="error" role="alert" data-testid="share-error">
          {shareError.value}
        </p>
      )}
    </Dialog>
  );
}
