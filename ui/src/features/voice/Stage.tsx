import { commands, type ChannelView, type MemberVoice } from "../../lib/bindings";
import { unwrap } from "../../lib/api";
import { describeStats, peerStats } from "../../lib/streams";
import { benchStreams, camera } from "../../lib/video";
import { VideoTile } from "../video/VideoTile";
import { HeadphonesIcon, MicIcon, SpeakerIcon } from "./icons";
import { servers, voiceAct } from "./store";

/** The voice channel I am in, and its server's name. */
export function myChannel(channel: number | null): { server: string; channel: ChannelView } | null {
  if (channel === null) return null;
  for (const s of servers.value ?? []) {
    const c = s.channels.find((c) => c.id === channel);
    if (c) return { server: s.name, channel: c };
  }
  return null;
}

/** One participant: their video (my self-view while my camera is on) or a big avatar with the
 *  speaking ring; name, mute/deafen badges, link quality. */
export function Tile(props: { member: MemberVoice; self: boolean }) {
  const m = props.member;
  const st = peerStats.value[m.user_id];
  const video = props.self && camera.value ? camera.value.stream_id : null;
  return (
    <div
      class={`tile ${m.speaking ? "speaking" : ""} ${video ? "video" : ""}`}
      data-testid={`tile-${m.display_name}`}
      data-speaking={m.speaking ? "true" : "false"}
      data-muted={m.muted ? "true" : "false"}
      data-video={video ? "true" : "false"}
    >
      {video ? (
        <VideoTile streamId={video} label={`${m.display_name}'s camera`} />
      ) : (
        <span class={`avatar big ${m.speaking ? "speaking-ring" : ""}`} data-testid={`avatar-${m.display_name}`}>
          {m.display_name.slice(0, 1).toUpperCase()}
        </span>
      )}
      <div class="tile-foot">
        {!props.self && st && <span class={`quality-dot ${st.quality}`} title={describeStats(st)} />}
        <span class="tile-name">
          {m.display_name}
          {props.self && " (you)"}
        </span>
        {m.muted && (
          <span class="tile-badge" title="Muted" data-testid={`tile-muted-${m.display_name}`}>
            <MicIcon size={14} off />
          </span>
        )}
        {m.deafened && (
          <span class="tile-badge" title="Deafened">
            <HeadphonesIcon size={14} off />
          </span>
        )}
      </div>
      {!props.self && (
        <input
          type="range"
          min="0"
          max="200"
          step="10"
          defaultValue="100"
          title={`Volume for ${m.display_name}`}
          class="volume"
          data-testid={`volume-${m.display_name}`}
          onChange={(e) => voiceAct(() => unwrap(commands.userVolumeSet(m.user_id, Number(e.currentTarget.value))))}
        />
      )}
    </div>
  );
}

/**
 * The main stage: everyone in my voice channel as a tile (the video grid to come), or how to
 * get into one.
 */
export function Stage(props: { channel: number | null; myId: string | null }) {
  const here = myChannel(props.channel);
  if (!here)
    return (
      <section class="stage empty" data-testid="stage">
        <SpeakerIcon size={40} />
        <p>You are not in a voice channel.</p>
        <p class="muted">Pick one in the list to join it; everyone in it shows up here.</p>
      </section>
    );
  const roster = here.channel.roster;
  const bench = benchStreams.value;
  return (
    <section class="stage" data-testid="stage" data-channel={here.channel.name}>
      <header class="stage-head">
        <SpeakerIcon /> <strong>{here.channel.name}</strong>
        <span class="muted">
          {here.server} · {roster.length} in the channel
        </span>
      </header>
      <div class={`tiles n${Math.min(roster.length + bench.length, 9)}`}>
        {roster.map((m) => (
          <Tile key={m.user_id} member={m} self={m.user_id === props.myId} />
        ))}
        {bench.map((id) => (
          <div class="tile video" key={id} data-testid={`tile-${id}`}>
            <VideoTile streamId={id} label={id} />
          </div>
        ))}
      </div>
    </section>
  );
}
