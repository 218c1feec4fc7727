import { signal } from "@preact/signals";
import { useEffect } from "preact/hooks";
import { commands, events, type CallView } from "../../lib/bindings";
import { messageOf, unwrap } from "../../lib/api";
import { describeStats, peerStats } from "../../lib/streams";
import { activeStreams, camera, cameraBusy, cameraError, cameraStreamOf, setCamera } from "../../lib/video";
import { VideoTile } from "../video/VideoTile";
import { screenStreamOf } from "../../lib/screen";
import { LevelMeter } from "../voice/LevelMeter";
import { CameraIcon, PhoneIcon } from "../voice/icons";
import { myVoice } from "../voice/store";

const IDLE: CallView = { phase: "idle", call: null, peer: null, peer_speaking: false, ended: null };

/** The 1-on-1 call, shared by the friends list (call buttons) and the call bar. */
export const currentCall = signal<CallView>(IDLE);
const callError = signal<string | null>(null);

/** Runs a call command; its error shows in the call bar. */
export async function callAction(f: () => Promise<CallView>) {
  callError.value = null;
  try {
    currentCall.value = await f();
  } catch (e) {
    callError.value = messageOf(e);
  }
}

/** Starts a call to a friend (from the friends screen). */
export function startCall(userId: string) {
  return callAction(() => unwrap(commands.callStart(userId)));
}

/**
 * The call bar at the top of every screen: an incoming call's accept/decline prompt, "Calling…"
 * with cancel, and in a call the peer (speaking ring, link quality), mute, deafen, hang up.
 */
export function CallPanel() {
  useEffect(() => {
    const syncVoice = () =>
      unwrap(commands.myVoice())
        .then((v) => (myVoice.value = v))
        .catch(() => {});
    unwrap(commands.callGet())
      .then((c) => (currentCall.value = c))
      .catch(() => {});
    syncVoice();
    let unlisten: (() => void) | undefined;
    events.callChanged
      .listen((e) => {
        currentCall.value = e.payload.call;
        if (e.payload.call.phase !== "idle") callError.value = null;
        syncVoice();
      })
      .then((u) => (unlisten = u))
      .catch(() => {});
    return () => unlisten?.();
  }, []);

  const c = currentCall.value;
  const name = c.peer?.display_name ?? "";
  const inMedia = c.phase === "active" || c.phase === "connecting";
  // My camera in a call stops with the call (in a channel it stays on my tile there).
  useEffect(() => {
    if (!inMedia && camera.value && !myVoice.value.channel) setCamera(false);
  }, [inMedia]);
  const stats = c.peer ? peerStats.value[c.peer.user_id] : undefined;

  async function setVoice(muted: boolean, deafened: boolean) {
    try {
      myVoice.value = await unwrap(commands.voiceStateSet(muted, deafened));
    } catch (e) {
      callError.value = messageOf(e);
    }
  }

  if (c.phase === "idle") {
    if (!c.ended && !callError.value) return null;
    return (
      <div class="call-bar ended" data-testid="call-bar" data-phase="idle">
        <PhoneIcon />
        <span data-testid="call-ended">{callError.value ?? c.ended}</span>
        <button
          class="secondary"
          data-testid="call-dismiss"
          onClick={() => {
            currentCall.value = IDLE;
            callError.value = null;
          }}
        >
          Dismiss
        </button>
      </div>
    );
  }

  const theirCamera = c.peer ? cameraStreamOf(c.peer.user_id) : null;
  const showTheirs = inMedia && theirCamera !== null && activeStreams.value.has(theirCamera);
  const showMine = inMedia && camera.value !== null;
  const theirScreen = c.peer ? screenStreamOf(c.peer.user_id) : null;
  const showScreen = inMedia && theirScreen !== null && activeStreams.value.has(theirScreen);
  return (
    <>
    <div class={`call-bar ${c.phase}`} data-testid="call-bar" data-phase={c.phase} role={c.phase === "incoming" ? "alertdialog" : undefined}>
      <span class={`avatar ${c.peer_speaking ? "speaking-ring" : ""}`} data-testid="call-peer" data-speaking={c.peer_speaking ? "true" : "false"}>
        {name.slice(0, 1).toUpperCase()}
      </span>
      <div class="call-text">
        <strong data-testid="call-status">
          {c.phase === "incoming" && `${name} is calling you`}
          {c.phase === "outgoing" && `Calling ${name}…`}
          {c.phase === "connecting" && `Connecting to ${name}…`}
          {c.phase === "active" && `In a call with ${name}`}
        </strong>
        {c.phase === "active" && (
          <span class="muted call-quality" data-testid="call-stats" data-rtt={stats?.rtt_ms ?? ""}>
            {stats ? (
              <>
                <span class={`quality-dot ${stats.quality}`} /> {describeStats(stats)}
              </>
            ) : (
              "Measuring connection…"
            )}
          </span>
        )}
        {callError.value && (
          <span class="error" role="alert" data-testid="call-error">
            {callError.value}
          </span>
        )}
      </div>
      {c.phase === "incoming" && (
        <>
          <button class="accept" data-testid="call-accept" onClick={() => callAction(() => unwrap(commands.callAccept()))}>
            Accept
          </button>
          <button class="danger" data-testid="call-decline" onClick={() => callAction(() => unwrap(commands.callDecline()))}>
            Decline
          </button>
        </>
      )}
      {(c.phase === "active" || c.phase === "connecting") && (
        <>
          <div class="call-meter">
            <LevelMeter thresholdDbfs={-45} compact />
          </div>
          <button
            data-testid="call-mute"
            class={myVoice.value.muted ? "toggle on" : "toggle"}
            onClick={() => setVoice(!myVoice.value.muted, myVoice.value.deafened)}
          >
            {myVoice.value.muted ? "Unmute" : "Mute"}
          </button>
          <button
            data-testid="call-deafen"
            class={myVoice.value.deafened ? "toggle on" : "toggle"}
            onClick={() => setVoice(myVoice.value.muted, !myVoice.value.deafened)}
          >
            {myVoice.value.deafened ? "Undeafen" : "Deafen"}
          </button>
          <button
            data-testid="call-camera"
            class={camera.value ? "toggle on" : "toggle"}
            aria-pressed={camera.value !== null}
            disabled={cameraBusy.value}
            title={camera.value ? "Turn camera off" : `Turn camera on: ${name} sees you`}
            onClick={() => setCamera(!camera.value)}
          >
            <CameraIcon />
            {camera.value ? " Stop video" : " Camera"}
          </button>
        </>
      )}
      {c.phase !== "incoming" && (
        <button class="danger" data-testid="call-hangup" onClick={() => callAction(() => unwrap(commands.callHangup()))}>
          {c.phase === "outgoing" ? "Cancel" : "Hang up"}
        </button>
      )}
    </div>
    {inMedia && cameraError.value && (
      <p class="error call-camera-error" role="alert" data-testid="call-camera-error">
        {cameraError.value}
      </p>
    )}
    {showScreen && theirScreen && (
      <div class="call-video call-screen" data-testid="call-screen">
        <div class="call-video-tile screen" data-testid="call-screen-peer">
          <VideoTile streamId={theirScreen} label={`${name}'s screen`} />
          <span class="call-video-name">{name}'s screen</span>
        </div>
      </div>
    )}
    {(showTheirs || showMine) && (
      <div class="call-video" data-testid="call-video">
        {showTheirs && theirCamera && (
          <div class="call-video-tile" data-testid="call-video-peer">
            <VideoTile streamId={theirCamera} label={`${name}'s camera`} />
            <span class="call-video-name">{name}</span>
          </div>
        )}
        {showMine && camera.value && (
          <div class="call-video-tile mine" data-testid="call-video-self">
            <VideoTile streamId={camera.value.stream_id} label="My camera" />
            <span class="call-video-name">You</span>
          </div>
        )}
      </div>
    )}
    </>
  );
}
