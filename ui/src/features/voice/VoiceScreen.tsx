import { CallPanel } from "../calls/CallPanel";
import { ChannelList } from "./ChannelList";
import { ControlBar } from "./ControlBar";
import { Stage } from "./Stage";
import { LivePanel } from "../stream/LivePanel";
import { useLiveSync } from "../stream/store";
import { audioNotice, currentServer, myVoice, serverNotice, servers, useVoiceSync, voiceError } from "./store";

/**
 * The voice view: the selected server's channel list (who sits where) beside the stage (the
 * channel I am in, as tiles) and the control bar. Renders two grid cells of the app layout.
 */
export function VoiceScreen(props: { myId?: string }) {
  useVoiceSync();
  const list = servers.value;
  const server = currentServer();
  const me = myVoice.value;
  useLiveSync(server?.id ?? null);
  return (
    <>
      <aside class="side" data-testid="voice-screen">
        {list === null && !voiceError.value && <p class="muted pad">Loading servers…</p>}
        {list?.length === 0 && (
          <p class="muted pad" data-testid="no-servers">
            No servers yet: add one with the + in the rail.
          </p>
        )}
        {serverNotice.value && (
          <p class="warning notice pad" role="status" data-testid="server-notice">
            {serverNotice.value}{" "}
            <button class="ghost small" data-testid="server-notice-dismiss" onClick={() => (serverNotice.value = null)}>
              OK
            </button>
          </p>
        )}
        {server && <ChannelList server={server} />}
      </aside>
      <main class="main">
        <CallPanel />
        {(audioNotice.value || me.audio_notice) && (
          <p class="warning notice" data-testid="audio-notice">
            {audioNotice.value ?? me.audio_notice}
          </p>
        )}
        {voiceError.value && (
          <p class="error notice" role="alert" data-testid="voice-error">
            {voiceError.value}
          </p>
        )}
        <LivePanel />
        <Stage channel={me.channel} myId={props.myId ?? null} />
        <ControlBar />
      </main>
    </>
  );
}
