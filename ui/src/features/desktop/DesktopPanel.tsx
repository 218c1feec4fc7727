import { useSignal } from "@preact/signals";
import { useEffect } from "preact/hooks";
import { commands, type DesktopSettings, type DesktopView } from "../../lib/bindings";
import { messageOf, unwrap } from "../../lib/api";
import { UpdatesSection } from "./Updates";

/** Start on login and close to tray: both off until the user turns them on. */
export function DesktopPanel() {
  const view = useSignal<DesktopView | null>(null);
  const error = useSignal<string | null>(null);

  useEffect(() => {
    commands
      .desktopSettingsGet()
      .then((v) => (view.value = v))
      .catch((e) => (error.value = messageOf(e)));
  }, []);

  async function save(next: DesktopSettings) {
    error.value = null;
    try {
      view.value = await unwrap(commands.desktopSettingsSet(next));
    } catch (e) {
      error.value = messageOf(e);
    }
  }

  const v = view.value;
  if (!v) return null;
  const s = v.settings;
  return (
    <section class="card" data-testid="desktop-panel">
      <h2>Desktop</h2>
      <label class="row">
        <input
          type="checkbox"
          data-testid="start-on-login"
          checked={s.start_on_login}
          disabled={v.autostart_error !== null}
          onChange={(e) => save({ ...s, start_on_login: e.currentTarget.checked })}
        />
        Start Hum when I log in ({v.tray ? "in the tray" : "minimised"})
      </label>
      {v.autostart_error && <p class="muted small-text">Not available here: {v.autostart_error}</p>}
      <label class="row">
        <input
          type="checkbox"
          data-testid="close-to-tray"
          checked={s.close_to_tray}
          disabled={!v.tray}
          onChange={(e) => save({ ...s, close_to_tray: e.currentTarget.checked })}
        />
        Closing the window keeps Hum running in the tray
      </label>
      {!v.tray && (
        <p class="muted small-text" data-testid="no-tray">
          No tray icon on this desktop (it needs libayatana-appindicator3 and a desktop that shows
          AppIndicators), so closing the window quits Hum.
        </p>
      )}
      {error.value && (
        <p class="error" role="alert" data-testid="desktop-error">
          {error.value}
        </p>
      )}
      <UpdatesSection />
    </section>
  );
}
