import { useSignal } from "@preact/signals";
import { useEffect } from "preact/hooks";
import { commands } from "../../lib/bindings";
import { unwrap } from "../../lib/api";
import { camera, cameraBusy, cameraError, setCamera } from "../../lib/video";
import { shareBusy, shareError, sharing, stopShare } from "../../lib/screen";
import { SharePicker } from "./SharePicker";
import { LevelMeter } from "./LevelMeter";
import { CameraIcon, HeadphonesIcon, LeaveIcon, MicIcon, ScreenIcon } from "./icons";
import { myChannel } from "./Stage";
import { currentCall } from "../calls/CallPanel";
import { myVoice, selfSpeaking, setMyVoice, voiceAct } from "./store";

/** Why unmute is greyed out: the channel's permissions took my `speak` away. */
export const MUTED_BY_CHANNEL = "You cannot unmute: this channel's permissions do not let you speak";

/** Why screen share is greyed out. */
export const SHARE_NOWHERE = "Join a voice channel or call a friend to share your screen";

/**
 * The bar under the stage: where I am and my input meter, then mute (greyed out, saying why,
 * while the channel's permissions do not let me speak), deafen, camera (my
 * self-view on my tile; in a channel or a call), share (the picker: a monitor, a window or the
 * test pattern; while sharing it stops the share) and leave. Leaving turns the camera and the
 * share off.
 */
export function ControlBar() {
  const me = myVoice.value;
  const here = myChannel(me.channel);
  const cam = camera.value;
  const inChannel = here !== null;
  // Muted by the channel's permissions (not by me): nothing is sent and unmute is refused.
  const byChannel = inChannel && me.muted_by_channel;
  const phase = currentCall.value.phase;
  const inCall = phase === "active" || phase === "connecting";
  // The self-view lives on my tile in a channel, or in the call's video: leaving the channel or
  // ending the call (from here, the channel list or the call bar) stops it.
  const picking = useSignal(false);
  const shared = sharing.value;
  useEffect(() => {
    if (!inChannel && !inCall && camera.value) setCamera(false);
    if (!inChannel && !inCall && sharing.value) stopShare();
  }, [inChannel, inCall, cam !== null, shared !== null]);
  const somewhere = inChannel || inCall;
  return (
    <footer class="control-bar" data-testid="control-bar">
      <div class="control-status">
        {here ? (
          <>
            <strong class="ok-text">Voice connected</strong>
            <span class="muted" data-testid="self-speaking">
              {byChannel
                ? "Muted by the channel's permissions"
                : selfSpeaking.value
                  ? "You are speaking"
                  : me.muted
                    ? "You are muted"
                    : `In ${here.channel.name}`}
            </span>
            <LevelMeter thresholdDbfs={-45} compact />
          </>
        ) : (
          <span class="muted">Not in a voice channel</span>
        )}
        {cameraError.value && (
          <span class="control-error" role="alert" data-testid="camera-error">
            {cameraError.value}
          </span>
        )}
        {shared && (
          <span class="muted" data-testid="sharing-state">
            Sharing {shared.name}
            {shared.width > 0 && ` · ${shared.width}×${shared.height} at ${shared.fps} fps`}
          </span>
        )}
        {!picking.value && shareError.value && (
          <span class="control-error" role="alert" data-testid="share-bar-error">
            {shareError.value}
          </span>
        )}
      </div>
      <div class="controls">
        <button
          data-testid="mute"
          class={`control ${me.muted ? "on" : ""}`}
          aria-pressed={me.muted}
          disabled={byChannel}
          title={byChannel ? MUTED_BY_CHANNEL : me.muted ? "Unmute" : "Mute"}
          onClick={() => setMyVoice(!me.muted, me.deafened)}
        >
          <MicIcon off={me.muted} />
          <span>{byChannel ? "Muted by channel" : me.muted ? "Unmute" : "Mute"}</span>
        </button>
        <button
          data-testid="deafen"
          class={`control ${me.deafened ? "on" : ""}`}
          aria-pressed={me.deafened}
          title={me.deafened ? "Undeafen" : "Deafen"}
          onClick={() => setMyVoice(me.muted, !me.deafened)}
        >
          <HeadphonesIcon off={me.deafened} />
          <span>{me.deafened ? "Undeafen" : "Deafen"}</span>
        </button>
        <button
          data-testid="camera"
          class={`control ${cam ? "on" : ""}`}
          aria-pressed={cam !== null}
          disabled={(!here && !inCall) || cameraBusy.value}
          title={!here && !inCall ? "Join a voice channel or call a friend to turn your camera on" : cam ? "Turn camera off" : "Turn camera on"}
          onClick={() => setCamera(!cam)}
        >
          <CameraIcon />
          <span>{cam ? "Stop video" : "Camera"}</span>
        </button>
        <button
          data-testid="share"
          class={`control ${shared ? "on" : ""}`}
          aria-pressed={shared !== null}
          disabled={(!somewhere && !shared) || shareBusy.value}
          title={!somewhere && !shared ? SHARE_NOWHERE : shared ? "Stop sharing your screen" : "Share your screen or a window"}
          onClick={() => (shared ? stopShare() : (picking.value = true))}
        >
          <ScreenIcon />
          <span>{shared ? "Stop sharing" : "Share"}</span>
        </button>
        {here && (
          <button class="control leave" data-testid="control-leave" title="Leave the channel" onClick={() => voiceAct(() => unwrap(commands.channelLeave()))}>
            <LeaveIcon />
            <span>Leave</span>
          </button>
        )}
      </div>
      {picking.value && <SharePicker onClose={() => (picking.value = false)} />}
    </footer>
  );
}
