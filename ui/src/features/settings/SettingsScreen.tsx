import { useSignal } from "@preact/signals";
import { useEffect } from "preact/hooks";
import { commands, type AppSettings, type IdentityInfo, type VoiceSettings } from "../../lib/bindings";
import { messageOf, unwrap } from "../../lib/api";
import { BandwidthPanel } from "./BandwidthPanel";
import { DesktopPanel } from "../desktop/DesktopPanel";
import { PrivacyPanel } from "./PrivacyPanel";
import { VoicePanel } from "./VoicePanel";

export function SettingsScreen(props: { identity: IdentityInfo }) {
  const settings = useSignal<AppSettings | null>(null);
  const voice = useSignal<VoiceSettings | null>(null);
  const relay = useSignal("");
  const relayMsg = useSignal<{ ok: boolean; text: string } | null>(null);
  const error = useSignal<string | null>(null);

  useEffect(() => {
    Promise.all([unwrap(commands.settingsGet()), commands.voiceSettingsGet()])
      .then(([s, v]) => {
        settings.value = s;
        relay.value = s.relay_url;
        voice.value = v;
      })
      .catch((e) => (error.value = messageOf(e)));
  }, []);

  async function saveRelay(e: Event) {
    e.preventDefault();
    try {
      relay.value = await unwrap(commands.relayUrlSet(relay.value));
      await unwrap(commands.relayConnect());
      relayMsg.value = { ok: true, text: "Saved. Reconnecting…" };
    } catch (err) {
      relayMsg.value = { ok: false, text: messageOf(err) };
    }
  }

  if (error.value) return <p class="error">{error.value}</p>;
  const s = settings.value;
  if (!s || !voice.value) return <p class="muted">Loading settings…</p>;
  return (
    <div class="settings" data-testid="settings-screen">
      <section class="card" data-testid="settings-identity">
        <h2>Identity</h2>
        <p>
          <strong data-testid="settings-name">{props.identity.display_name}</strong>
        </p>
        <p class="muted">Public key (share it with friends):</p>
        <code class="key" data-testid="public-key">
          {props.identity.public_key}
        </code>
      </section>
      <section class="card" data-testid="settings-relay">
        <h2>Relay</h2>
        <form onSubmit={saveRelay} class="row">
          <input
            data-testid="settings-relay-url"
            value={relay.value}
            onInput={(e) => (relay.value = e.currentTarget.value)}
          />
          <button type="submit">Save</button>
        </form>
        {relayMsg.value && (
          <p class={relayMsg.value.ok ? "muted" : "error"} role={relayMsg.value.ok ? undefined : "alert"}>
            {relayMsg.value.text}
          </p>
        )}
      </section>
      {s.bandwidth_notice && <p class="warning">{s.bandwidth_notice}</p>}
      <BandwidthPanel initial={s.bandwidth} initialReport={s.bandwidth_report} />
      <VoicePanel initial={voice.value} />
      <DesktopPanel />
      <PrivacyPanel />
    </div>
  );
}
