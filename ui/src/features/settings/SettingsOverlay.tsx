import type { IdentityInfo } from "../../lib/bindings";
import { CloseIcon } from "../voice/icons";
import { useEscape } from "../layout/Dialog";
import { SettingsScreen } from "./SettingsScreen";

const SECTIONS: { id: string; label: string }[] = [
  { id: "settings-identity", label: "My account" },
  { id: "settings-relay", label: "Relay" },
  { id: "bandwidth-panel", label: "Bandwidth" },
  { id: "voice-panel", label: "Voice & devices" },
  { id: "privacy-panel", label: "Privacy" },
];

/**
 * Settings over the app (the server rail stays usable): a section list on the left that scrolls
 * the page to each panel, the panels on the right; Escape or the close button returns.
 */
export function SettingsOverlay(props: { identity: IdentityInfo; onClose: () => void }) {
  useEscape(props.onClose);
  return (
    <div class="overlay" role="dialog" aria-modal="true" aria-label="Settings" data-testid="settings-overlay">
      <nav class="overlay-nav">
        <h2>Settings</h2>
        {SECTIONS.map((s) => (
          <button
            key={s.id}
            class="ghost nav-item"
            data-testid={`settings-tab-${s.id}`}
            onClick={() => document.querySelector(`[data-testid=${s.id}]`)?.scrollIntoView({ block: "start" })}
          >
            {s.label}
          </button>
        ))}
      </nav>
      <div class="overlay-body">
        <SettingsScreen identity={props.identity} />
      </div>
      <button class="ghost overlay-close" aria-label="Close settings" title="Close (Esc)" data-testid="settings-close" onClick={props.onClose}>
        <CloseIcon size={22} />
      </button>
    </div>
  );
}
