import { useSignal } from "@preact/signals";
import { useEffect } from "preact/hooks";
import { commands, type IdentityInfo } from "./lib/bindings";
import { messageOf, unwrap } from "./lib/api";
import { FirstRun } from "./features/onboarding/FirstRun";
import { SettingsScreen } from "./features/settings/SettingsScreen";
import { VoiceScreen } from "./features/voice/VoiceScreen";
import { FriendsScreen } from "./features/friends/FriendsScreen";
import { RelayBanner } from "./features/voice/RelayBanner";
import { CallPanel } from "./features/calls/CallPanel";
import { openStreams } from "./lib/streams";

type Tab = "voice" | "friends" | "settings";

export function App() {
  const identity = useSignal<IdentityInfo | null | undefined>(undefined);
  const defaultRelay = useSignal("ws://127.0.0.1:7700/ws");
  const tab = useSignal<Tab>("voice");
  const error = useSignal<string | null>(null);

  useEffect(() => {
    Promise.all([unwrap(commands.identityGet()), unwrap(commands.settingsGet())])
      .then(([id, s]) => {
        defaultRelay.value = s.relay_url;
        identity.value = id;
      })
      .catch((e) => (error.value = messageOf(e)));
  }, []);

  if (error.value)
    return (
      <p class="error" role="alert">
        {error.value}
      </p>
    );
  if (identity.value === undefined) return <p class="muted">Loading…</p>;
  if (identity.value === null)
    return (
      <FirstRun
        defaultRelay={defaultRelay.value}
        onDone={(id) => {
          identity.value = id;
          commands.relayConnect().catch(() => {});
        }}
      />
    );

  const id = identity.value;
  openStreams().catch(() => {});
  const navButton = (t: Tab, label: string) => (
    <button class={tab.value === t ? "nav active" : "nav"} data-testid={`nav-${t}`} onClick={() => (tab.value = t)}>
      {label}
    </button>
  );
  return (
    <div class="shell">
      <nav class="sidebar">
        <div class="me" data-testid="me">
          <span class="avatar">{id.display_name.slice(0, 1).toUpperCase()}</span>
          {id.display_name}
        </div>
        {navButton("voice", "Voice")}
        {navButton("friends", "Friends")}
        {navButton("settings", "Settings")}
        <div style={{ flex: 1 }} />
        <RelayBanner />
      </nav>
      <main class="content">
        <CallPanel />
        {tab.value === "settings" && <SettingsScreen identity={id} />}
        {tab.value === "friends" && <FriendsScreen />}
        {tab.value === "voice" && <VoiceScreen />}
      </main>
    </div>
  );
}
