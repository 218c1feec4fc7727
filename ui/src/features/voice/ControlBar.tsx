import { commands } from "../../lib/bindings";
import { unwrap } from "../../lib/api";
import { LevelMeter } from "./LevelMeter";
import { CameraIcon, HeadphonesIcon, LeaveIcon, MicIcon, ScreenIcon } from "./icons";
import { myChannel } from "./Stage";
import { myVoice, selfSpeaking, setMyVoice, voiceAct } from "./store";

/** Why camera and screen share are greyed out. */
export const VIDEO_COMING = "Video is coming: camera and screen sharing arrive with video calls.";

/**
 * The bar under the stage: where I am and my input meter, then mute, deafen, camera and share
 * (disabled until video lands) and leave.
 */
export function ControlBar() {
  const me = myVoice.value;
  const here = myChannel(me.channel);
  return (
    <footer class="control-bar" data-testid="control-bar">
      <div class="control-status">
        {here ? (
          <>
            <strong class="ok-text">Voice connected</strong>
            <span class="muted" data-testid="self-speaking">
              {selfSpeaking.value ? "You are speaking" : me.muted ? "You are muted" : `In ${here.channel.name}`}
            </span>
            <LevelMeter thresholdDbfs={-45} compact />
          </>
        ) : (
          <span class="muted">Not in a voice channel</span>
        )}
      </div>
      <div class="controls">
        <button
          data-testid="mute"
          class={`control ${me.muted ? "on" : ""}`}
          aria-pressed={me.muted}
          title={me.muted ? "Unmute" : "Mute"}
          onClick={() => setMyVoice(!me.muted, me.deafened)}
        >
          <MicIcon off={me.muted} />
          <span>{me.muted ? "Unmute" : "Mute"}</span>
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
        <button data-testid="camera" class="control" disabled title={VIDEO_COMING}>
          <CameraIcon />
          <span>Camera</span>
        </button>
        <button data-testid="share" class="control" disabled title={VIDEO_COMING}>
          <ScreenIcon />
          <span>Share</span>
        </button>
        {here && (
          <button class="control leave" data-testid="control-leave" title="Leave the channel" onClick={() => voiceAct(() => unwrap(commands.channelLeave()))}>
            <LeaveIcon />
            <span>Leave</span>
          </button>
        )}
      </div>
    </footer>
  );
}
