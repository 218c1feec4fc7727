import { useSignal } from "@preact/signals";
import { useEffect } from "preact/hooks";
import { commands, type IdentityInfo } from "./lib/bindings";
import { messageOf, unwrap } from "./lib/api";
import { FirstRun } from "./features/onboarding/FirstRun";
import { SettingsOverlay } from "./features/settings/SettingsOverlay";
import { VoiceScreen } from "./features/voice/VoiceScreen";
import { FriendsScreen } from "./features/friends/FriendsScreen";
import { LinkPrompt } from "./features/links/LinkPrompt";
import { useTray } from "./features/desktop/tray";
import { RelayBanner } from "./features/voice/RelayBanner";
import { UpdateNotice } from "./features/desktop/Updates";
import { CallPanel } from "./features/calls/CallPanel";
import { ServerRail, type View } from "./features/layout/ServerRail";
import { useVoiceSync } from "./features/voice/store";
import { openStreams } from "./lib/streams";
import { openVideo } from "./lib/video";

/**
 * The layout of a voice app: the server rail, a side column (the server's channels with who sits
 * in each, or friends) with my name and the relay's state under it, the main stage with the
 * control bar, and settings as an overlay.
 */
export function App() {
  const identity = useSignal<IdentityInfo | null | undefined>(undefined);
  const defaultRelay = useSignal("ws://127.0.0.1:7700/ws");
  const view = useSignal<View>("voice");
  const settingsOpen = useSignal(false);
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
  // Remote cameras (a call, a voice channel) show whether or not mine was ever on.
  openVideo().catch(() => {});
  return (
    <Shell
      identity={id}
      view={view.value}
      settingsOpen={settingsOpen.value}
      onView={(v) => {
        view.value = v;
        settingsOpen.value = false;
      }}
      onSettings={(open) => (settingsOpen.value = open)}
    />
  );
}

function Shell(props: {
  identity: IdentityInfo;
  view: View;
  settingsOpen: boolean;
  onView: (v: View) => void;
  onSettings: (open: boolean) => void;
}) {
  useVoiceSync();
  useTray();
  const id = props.identity;
  return (
    <div class="layout">
      <ServerRail
        view={props.view}
        settingsOpen={props.settingsOpen}
        onView={props.onView}
        onSettings={() => props.onSettings(!props.settingsOpen)}
      />
      {props.view === "voice" ? (
        <VoiceScreen myId={id.public_key} />
      ) : (
        <>
          <aside class="side">
            <header class="side-head">
              <h2>Friends</h2>
            </header>
            <p class="muted pad small-text">Add friends by @handle, friend link or public key; call the ones who are online.</p>
          </aside>
          <main class="main">
            <CallPanel />
            <div class="page">
              <FriendsScreen />
            </div>
          </main>
        </>
      )}
      <div class="user-panel">
        <div class="me" data-testid="me">
          <span class="avatar">{id.display_name.slice(0, 1).toUpperCase()}</span>
          {id.display_name}
        </div>
        <UpdateNotice />
        <RelayBanner />
      </div>
      {props.settingsOpen && <SettingsOverlay identity={id} onClose={() => props.onSettings(false)} />}
      <LinkPrompt onJoined={() => props.onView("voice")} />
    </div>
  );
}
