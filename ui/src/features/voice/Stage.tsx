import { useSignal } from "@preact/signals";
import { useEffect, useRef } from "preact/hooks";
import { commands, type ChannelView, type MemberVoice } from "../../lib/bindings";
import { unwrap } from "../../lib/api";
import { describeStats, peerStats } from "../../lib/streams";
import {
  FULL_TILES,
  activeStreams,
  askLayers,
  benchStreams,
  camera,
  cameraStreamOf,
  endedStreams,
  forgetLayers,
  layerPlan,
  pinned,
  type TileQuality,
} from "../../lib/video";
import { VideoTile } from "../video/VideoTile";
import { screenStreamOf } from "../../lib/screen";
import { HeadphonesIcon, MicIcon, SpeakerIcon } from "./icons";
import { servers, voiceAct } from "./store";
import { ChannelPrivacy } from "../settings/ChannelPrivacy";

/** The voice channel I am in, and its server's name. */
export function myChannel(channel: number | null): { server: string; channel: ChannelView } | null {
  if (channel === null) return null;
  for (const s of servers.value ?? []) {
    const c = s.channels.find((c) => c.id === channel);
    if (c) return { server: s.name, channel: c };
  }
  return null;
}

/** The stream a member's tile shows: my self-view while my camera is on; someone else's camera
 *  while its frames arrive (it goes the moment they say their camera is off). */
export function tileStream(m: MemberVoice, self: boolean): string | null {
  if (self) return camera.value ? camera.value.stream_id : null;
  const id = cameraStreamOf(m.user_id);
  return activeStreams.value.has(id) ? id : null;
}

/** One participant: their video (my self-view while my camera is on) or a big avatar with the
 *  speaking ring; name, mute/deafen badges, link quality, a pin button (pinned: the spotlight).
 *  `data-camera` says why there is no video: `off` (they said so), `paused` (the SFU paused it
 *  because my connection does not carry it: `paused`), else `none`; `data-quality` the layer
 *  asked of their camera (high, low, off). */
export function Tile(props: { member: MemberVoice; self: boolean; quality?: TileQuality; paused?: boolean }) {
  const m = props.member;
  const st = peerStats.value[m.user_id];
  const video = tileStream(m, props.self);
  const said = !props.self && endedStreams.value.has(cameraStreamOf(m.user_id));
  const paused = !props.self && !said && props.paused === true;
  return (
    <div
      class={`tile ${m.speaking ? "speaking" : ""} ${video ? "video" : ""}`}
      data-testid={`tile-${m.display_name}`}
      data-speaking={m.speaking ? "true" : "false"}
      data-muted={m.muted ? "true" : "false"}
      data-video={video ? "true" : "false"}
      data-camera={video ? "on" : said ? "off" : paused ? "paused" : "none"}
      data-quality={props.quality}
    >
      {video ? (
        <VideoTile streamId={video} label={`${m.display_name}'s camera`} />
      ) : (
        <span class={`avatar big ${m.speaking ? "speaking-ring" : ""}`} data-testid={`avatar-${m.display_name}`}>
          {m.display_name.slice(0, 1).toUpperCase()}
        </span>
      )}
      {paused && (
        <span
          class="tile-paused"
          data-testid={`tile-paused-${m.display_name}`}
          title="The relay paused this video because your connection cannot carry it now; it resumes when it can."
        >
          Video paused: your connection
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
        <button
          class={`tile-pin small secondary ${pinned.value === m.user_id ? "on" : ""}`}
          data-testid={`pin-${m.display_name}`}
          aria-pressed={pinned.value === m.user_id}
          title={pinned.value === m.user_id ? "Unpin" : "Pin to the spotlight"}
          onClick={() => (pinned.value = pinned.value === m.user_id ? null : m.user_id)}
        >
          📌
        </button>
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

/** Whether the SFU paused `user`'s camera for my connection (`sfu_paused`). */
export function cameraPaused(channel: ChannelView, user: string): boolean {
  return (channel.paused_videos ?? []).some((p) => p.user_id === user && !p.screen);
}

/** Someone's screen share as a tile of its own (beside their camera or avatar tile); while the
 *  SFU has it paused for my connection, a note instead of the picture. */
export function ScreenTile(props: { member: MemberVoice; paused?: boolean }) {
  const m = props.member;
  const paused = props.paused === true && !activeStreams.value.has(screenStreamOf(m.user_id));
  return (
    <div class="tile video screen" data-testid={`screen-${m.display_name}`} data-paused={paused ? "true" : "false"}>
      {paused ? (
        <span
          class="tile-paused"
          data-testid={`screen-paused-${m.display_name}`}
          title="The relay paused this screen share because your connection cannot carry it now; it resumes when it can."
        >
          Screen share paused: your connection
        </span>
      ) : (
        <VideoTile streamId={screenStreamOf(m.user_id)} label={`${m.display_name}'s screen`} />
      )}
      <div class="tile-foot">
        <span class="tile-name">{m.display_name}'s screen</span>
      </div>
    </div>
  );
}

/** The remote members whose screen share is arriving (or is paused by the SFU for my
 *  connection: `paused`, their user ids), in roster order. */
export function screenSharers(roster: MemberVoice[], myId: string | null, paused: string[] = []): MemberVoice[] {
  return roster.filter(
    (m) => m.user_id !== myId && (activeStreams.value.has(screenStreamOf(m.user_id)) || paused.includes(m.user_id)),
  );
}

/** The user ids whose screen share the SFU paused for my connection. */
function pausedScreens(channel: ChannelView): string[] {
  return (channel.paused_videos ?? []).filter((p) => p.screen).map((p) => p.user_id);
}

/** Tiles on one page of a big room's grid (past this the stage pages). */
export const PAGE_SIZE = 24;

/** The stage's layout: the spotlight, the page of tiles shown, and the layer each remote
 *  camera needs for it. */
function stageLayout(channel: ChannelView, myId: string | null, last: { current: string | null }, page: number) {
  const roster = channel.roster;
  const sfu = channel.mode === "sfu";
  // A screen share is spotlight-worthy: the first one takes the spotlight unless someone is
  // pinned; other shares are tiles in the grid.
  const sharers = screenSharers(roster, myId, pausedScreens(channel));
  const pin = pinned.value && roster.some((m) => m.user_id === pinned.value) ? pinned.value : null;
  const screenSpot = pin ? null : sharers[0] ?? null;
  const screenTiles = sharers.filter((m) => m !== screenSpot);
  const spotId = screenSpot ? null : spotlightOf(channel, myId, last);
  const spot = spotId ? roster.find((m) => m.user_id === spotId) ?? null : null;
  const rest = spot ? roster.filter((m) => m !== spot) : roster;
  const pages = Math.max(1, Math.ceil(rest.length / PAGE_SIZE));
  const p = Math.min(page, pages - 1);
  const shown = rest.slice(p * PAGE_SIZE, (p + 1) * PAGE_SIZE);
  const remotes = roster.filter((m) => m.user_id !== myId).map((m) => m.user_id);
  const cameras = remotes.filter((u) => activeStreams.value.has(cameraStreamOf(u))).length;
  const plan = layerPlan(remotes, new Set(shown.map((m) => m.user_id)), spot?.user_id ?? null, cameras);
  return { sfu, spot, pages, p, shown, plan, screenSpot, screenTiles };
}

/** Grid density by how many tiles share the stage. */
function density(n: number): string {
  if (n > 16) return "crowd";
  if (n > 8) return "many";
  return `n${Math.min(n, 9)}`;
}

/** Who is in the spotlight: a pinned member; else on the SFU the dominant speaker the relay
 *  announces; else in a mesh with more than FULL_TILES cameras the last remote member who
 *  spoke with their camera on (`last` keeps them between words). */
export function spotlightOf(
  channel: ChannelView,
  myId: string | null,
  last: { current: string | null },
): string | null {
  const roster = channel.roster;
  const pin = pinned.value;
  if (pin && roster.some((m) => m.user_id === pin)) return pin;
  if (channel.mode === "sfu") return channel.speaker;
  const withCamera = (m: MemberVoice) => m.user_id !== myId && activeStreams.value.has(cameraStreamOf(m.user_id));
  const talking = roster.find((m) => m.speaking && withCamera(m));
  if (talking) last.current = talking.user_id;
  if (!roster.some((m) => m.user_id === last.current)) last.current = null;
  return roster.filter(withCamera).length > FULL_TILES ? last.current : null;
}

/**
 * The main stage: everyone in my voice channel as a tile, or how to get into one. The spotlight
 * (a large tile above the others, see `spotlightOf`) is a pinned member or the speaker; a room
 * bigger than one page of thumbnails pages. Each sender's camera is asked for the layer its
 * tile needs (`layerPlan`: the spotlight high, thumbnails low, off-page off): in a mesh the
 * sender, on the SFU the relay (`sfu_quality`, which otherwise follows its dominant speaker). The header says
 * whether the channel is a mesh or on the relay's SFU.
 */
export function Stage(props: { channel: number | null; myId: string | null }) {
  const page = useSignal(0);
  const lastSpeaker = useRef<string | null>(null);
  const here = myChannel(props.channel);
  const layout = here ? stageLayout(here.channel, props.myId, lastSpeaker, page.value) : null;
  const planKey = layout ? [...layout.plan].map(([u, q]) => `${u}=${q}`).join(",") : "";
  const where = here ? `${here.channel.id}/${here.channel.mode}` : "";
  useEffect(() => forgetLayers(), [where]);
  // The same rule in a mesh (each sender asked) and on the SFU (the relay asked, `sfu_quality`).
  useEffect(() => {
    if (layout) askLayers(layout.plan);
  }, [planKey, where]);
  if (!here || !layout)
    return (
      <section class="stage empty" data-testid="stage">
        <SpeakerIcon size={40} />
        <p>You are not in a voice channel.</p>
        <p class="muted">Pick one in the list to join it; everyone in it shows up here.</p>
      </section>
    );
  const roster = here.channel.roster;
  const bench = benchStreams.value;
  const { sfu, spot, pages, p, shown, plan, screenSpot, screenTiles } = layout;
  const quality = (m: MemberVoice) => (m.user_id === props.myId ? undefined : plan.get(m.user_id));
  return (
    <section
      class={`stage ${spot || screenSpot ? "with-spotlight" : ""}`}
      data-testid="stage"
      data-channel={here.channel.name}
      data-mode={here.channel.mode}
      data-spotlight={spot?.display_name ?? ""}
      data-screen-spotlight={screenSpot?.display_name ?? ""}
    >
      <header class="stage-head">
        <SpeakerIcon /> <strong>{here.channel.name}</strong>
        <span class="muted">
          {here.server} · {roster.length} in the channel
        </span>
        <span
          class={`mode-badge ${sfu ? "sfu" : ""}`}
          data-testid="stage-mode"
          title={
            sfu
              ? "On the relay's SFU: you send your audio once and the relay forwards it to everyone (big channels)."
              : "Mesh: everyone connects to everyone directly (small channels)."
          }
        >
          {sfu ? "SFU" : "Mesh"}
        </span>
        <ChannelPrivacy channel={here.channel.id} sfu={sfu} roster={roster} myId={props.myId} />
        {pages > 1 && (
          <span class="stage-pager">
            <button class="small secondary" data-testid="stage-prev" disabled={p === 0} onClick={() => (page.value = p - 1)}>
              ‹
            </button>
            <span data-testid="stage-page">
              {p + 1}/{pages}
            </span>
            <button class="small secondary" data-testid="stage-next" disabled={p >= pages - 1} onClick={() => (page.value = p + 1)}>
              ›
            </button>
          </span>
        )}
      </header>
      {screenSpot && (
        <div class="spotlight" data-testid="screen-spotlight">
          <ScreenTile
            key={`screen-${screenSpot.user_id}`}
            member={screenSpot}
            paused={pausedScreens(here.channel).includes(screenSpot.user_id)}
          />
        </div>
      )}
      {spot && (
        <div class="spotlight" data-testid="spotlight">
          <Tile
            key={spot.user_id}
            member={spot}
            self={spot.user_id === props.myId}
            quality={quality(spot)}
            paused={cameraPaused(here.channel, spot.user_id)}
          />
        </div>
      )}
      <div
        class={`tiles ${density(shown.length + bench.length + screenTiles.length)} ${spot || screenSpot ? "thumbs" : ""}`}
        data-testid="stage-grid"
        data-tiles={shown.length}
      >
        {screenTiles.map((m) => (
          <ScreenTile key={`screen-${m.user_id}`} member={m} paused={pausedScreens(here.channel).includes(m.user_id)} />
        ))}
        {shown.map((m) => (
          <Tile
            key={m.user_id}
            member={m}
            self={m.user_id === props.myId}
            quality={quality(m)}
            paused={cameraPaused(here.channel, m.user_id)}
          />
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
