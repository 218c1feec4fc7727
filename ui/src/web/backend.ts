// The web back end: the commands of the generated bindings (ui/src/lib/bindings.ts) implemented in
// the page, speaking the relay protocol over WebSocket (./protocol.ts) and running voice channels
// with the browser's own WebRTC stack: a mesh (./mesh.ts), or one connection to the relay's SFU
// when the channel runs there (./sfu.ts). What the desktop back end (src-tauri)
// emits as Tauri events is emitted on the page's bus (./event.ts).
//
// Stored in the browser (docs/browser.md): the identity in IndexedDB (./identity.ts); the relay
// address, voice settings and per-user volumes in localStorage (keys `hum.*`). Nothing else.

import type {
  AppSettings,
  BandwidthReport,
  BandwidthSettings,
  ChannelView,
  DeviceView,
  IdentityInfo,
  CameraView,
  LevelSample,
  LinkView,
  LiveStreamView,
  PeerStatsView,
  MemberVoice,
  MyVoice,
  PausedVideo,
  RelayStatus,
  ServerView,
  VoiceMode,
  VoiceSettings,
} from "../lib/bindings";
import { checkDisplayName, commandError, type Handlers, inviteCode, normaliseRelayUrl, notInBrowser } from "./dispatch";
import { emitLocal } from "./event";
import { generateIdentity, loadIdentity, saveIdentity, type StoredIdentity } from "./identity";
import { VoiceMesh } from "./mesh";
import { dbfs, peerStatsView, SpeakingGate } from "./monitor";
import { isUserId, PathMove, SfuConnection } from "./sfu";
import { cameraError, cameraView, type InboundVideo, NO_VIDEO_HERE, pausedKey, RemoteVideos, SELF_STREAM } from "./video";
import { endStream, noteFrame, setMediaTrack } from "../lib/videoStreams";
import type { Channel } from "./core";
import { type Json, login, RelayConnection } from "./protocol";

const KEY_RELAY = "hum.relay_url";
const KEY_VOICE = "hum.voice_settings";

/** A storage like localStorage (tests give a Map-backed one). */
export type KeyValue = Pick<Storage, "getItem" | "setItem">;

export const DEFAULT_BANDWIDTH: BandwidthSettings = {
  version: 1,
  total_upload: { mode: "auto" },
  reserved: { mode: "auto" },
  relay: { level: "off" },
  download_quality: "auto",
  protection: { queuing_delay_target_ms: 12, game_server: null, game_processes: [] },
  last_probe: null,
};

const EMPTY_REPORT: BandwidthReport = {
  effective: {
    total: 0,
    total_source: { source: "not_measured" },
    reserved: 0,
    reserved_source: "estimated",
    available: 0,
    relay: 0,
    relay_presets: { off: 0, low: 0, medium: 0, high: 0 },
    download_quality: "auto",
    conservative: true,
    warnings: [],
  },
  errors: [],
};

export const DEFAULT_VOICE: VoiceSettings = {
  transmit_mode: "voice_activity",
  ptt_shortcut: "",
  sensitivity_dbfs: -45,
  noise_suppression: true,
  input_device: null,
  output_device: null,
  user_volumes: {},
};

/** The relay this page came from: ws(s)://HOST/ws. */
export function defaultRelayUrl(loc: { protocol: string; host: string } | undefined): string {
  if (!loc || !loc.host) return "ws://127.0.0.1:7700/ws";
  return `${loc.protocol === "https:" ? "wss" : "ws"}://${loc.host}/ws`;
}

/** A roster entry of the protocol as the UI's MemberVoice. */
export function memberOf(e: Json): MemberVoice {
  return {
    user_id: e.user.id,
    display_name: e.user.display_name,
    muted: !!e.voice?.muted,
    deafened: !!e.voice?.deafened,
    speaking: !!e.voice?.speaking,
  };
}

export function channelOf(c: Json, mode: VoiceMode, speaker: string | null, paused: PausedVideo[] = []): ChannelView {
  const all = { join: true, speak: true, video: true, stream: true };
  return {
    id: c.id,
    name: c.name,
    max_participants: c.max_participants,
    permissions: c.permissions ?? { member: all, admin: all },
    roster: (c.roster ?? []).map(memberOf),
    mode,
    mesh_limit: typeof c.mesh_limit === "number" ? c.mesh_limit : null,
    speaker,
    // The videos the SFU paused for my connection (`sfu_paused`), in my channel.
    paused_videos: paused,
  };
}

const SERVER_EVENTS = new Set([
  "server_updated",
  "server_removed",
  "member_joined",
  "member_left",
  "member_updated",
  "channel_created",
  "channel_updated",
  "channel_deleted",
  "roster_join",
  "roster_leave",
  "roster_update",
  "channel_mode",
  "sfu_speaker",
  "sfu_paused",
]);

export class WebBackend {
  private identity: StoredIdentity | null | undefined = undefined;
  private relay: RelayConnection | null = null;
  private status: RelayStatus = { state: "offline" };
  private attempt = 0;
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private welcome: Json = null;
  private voice: MyVoice = { channel: null, muted: false, deafened: false, muted_by_channel: false, audio_notice: null };
  private mesh: VoiceMesh | null = null;
  /** My connection to the SFU while the channel runs there (docs/protocol.md §8a). */
  private sfu: SfuConnection | null = null;
  /** A move between mesh and SFU under way: the old path closes when it is done. */
  private move: PathMove | null = null;
  private moveTimer: ReturnType<typeof setInterval> | null = null;
  /** The other members of my voice channel. */
  private roster = new Set<string>();
  private mic: MediaStream | null = null;
  private modes = new Map<number, VoiceMode>();
  private speakers = new Map<number, string | null>();
  private linksTaken = false;
  private levels: Channel<LevelSample> | null = null;
  private stats: Channel<PeerStatsView> | null = null;
  private monitorStop: (() => void) | null = null;
  /** Remote audio per user: the stream, the element playing it and the path it came over
   *  (tests and diagnostics read it). */
  readonly remote = new Map<string, { stream: MediaStream; el: HTMLAudioElement; via: "mesh" | "sfu"; track: string }>();
  /** The others' videos received on the SFU (shown from their tracks: lib/videoStreams.ts). */
  readonly videos = new RemoteVideos();
  private videoTimer: ReturnType<typeof setInterval> | null = null;
  /** My camera while on (published on the SFU). */
  private cam: MediaStreamTrack | null = null;
  /** Whether my channel lets me send video (its `video` permission). */
  private videoAllowed = true;
  /** The videos the SFU paused for my connection (`sfu_paused`), by `<user>/camera|screen`. */
  private paused = new Map<string, PausedVideo>();

  constructor(
    private store: KeyValue,
    private location: { protocol: string; host: string; pathname: string; href: string } | undefined,
  ) {}

  private emit(event: string, payload: unknown) {
    emitLocal(event, payload);
  }

  private setStatus(s: RelayStatus) {
    this.status = s;
    this.emit("relay-status-changed", { status: s });
  }

  relayUrl(): string {
    return this.store.getItem(KEY_RELAY) ?? defaultRelayUrl(this.location);
  }

  voiceSettings(): VoiceSettings {
    try {
      const v = JSON.parse(this.store.getItem(KEY_VOICE) ?? "null");
      return v ? { ...DEFAULT_VOICE, ...v } : DEFAULT_VOICE;
    } catch {
      return DEFAULT_VOICE;
    }
  }

  private async me(): Promise<StoredIdentity | null> {
    if (this.identity === undefined) this.identity = await loadIdentity();
    return this.identity;
  }

  private info(id: StoredIdentity): IdentityInfo {
    return { display_name: id.display_name, public_key: id.public_key };
  }

  private connected(): RelayConnection {
    if (!this.relay || this.relay.closed || this.status.state !== "connected")
      throw commandError("relay_unavailable", "Not connected to the relay.");
    return this.relay;
  }

  /** Waits (up to 15 s) for a connection under way, so a click right after the page opened
   *  (the invite dialog) does not fail for a login that is a moment away. */
  private async ready(): Promise<RelayConnection> {
    for (let i = 0; i < 150 && this.status.state === "connecting"; i++) await new Promise((r) => setTimeout(r, 100));
    return this.connected();
  }

  // --- the relay connection ----------------------------------------------------------------------

  async connect(): Promise<RelayStatus> {
    const id = await this.me();
    if (!id) throw commandError("no_identity", "Create your identity first.");
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.relay?.close();
    this.teardownVoice();
    this.attempt += 1;
    this.setStatus({ state: "connecting", attempt: this.attempt });
    const url = this.relayUrl();
    const relay = new RelayConnection(url);
    this.relay = relay;
    try {
      await relay.open();
      relay.onEvent = (ev) => this.onEvent(ev);
      relay.onClose = (reason) => this.lost(relay, reason, true);
      this.welcome = await login(relay, id.key, id.public_key, id.display_name);
      this.attempt = 0;
      this.setStatus({ state: "connected", user_id: this.welcome.user.id, display_name: this.welcome.user.display_name, node: url });
      this.emit("servers-changed", null);
    } catch (e) {
      const refused = e instanceof Error && "code" in e && (e as { code: string }).code !== "closed" && (e as { code: string }).code !== "relay_unavailable";
      this.lost(relay, e instanceof Error ? e.message : String(e), !refused);
    }
    return this.status;
  }

  private lost(relay: RelayConnection, reason: string, retry: boolean) {
    if (relay !== this.relay) return;
    relay.close();
    this.teardownVoice();
    const delay = retry ? Math.min(10_000, 1000 * 2 ** Math.min(this.attempt, 4)) : null;
    this.setStatus({ state: "disconnected", reason, retry_in_ms: delay });
    this.emit("servers-changed", null);
    if (delay !== null) this.retryTimer = setTimeout(() => this.connect().catch(() => {}), delay);
  }

  private onEvent(ev: Json) {
    this.mesh?.handleEvent(ev);
    this.sfu?.handleEvent(ev);
    const mine = this.voice.channel !== null && ev.channel === this.voice.channel;
    const me = this.welcome?.user?.id;
    if (mine && ev.type === "roster_join" && ev.entry?.user?.id && ev.entry.user.id !== me) this.roster.add(ev.entry.user.id);
    if (mine && ev.type === "roster_leave" && ev.user !== me) {
      this.roster.delete(ev.user);
      this.dropRemote(ev.user, "sfu");
      this.dropVideos(ev.user);
    }
    // A member's camera went off (the roster's `video`): the tile goes at once, as the desktop's.
    if (mine && ev.type === "roster_update" && ev.user !== me && ev.voice?.video === false) endStream(`${ev.user}/camera`);
    if (mine && ev.type === "sfu_paused" && isUserId(ev.user) && typeof ev.track === "string") {
      const key = pausedKey(ev.user, ev.track);
      if (ev.paused) this.paused.set(key, { user_id: ev.user, screen: key.endsWith("/screen") });
      else this.paused.delete(key);
    }
    if (ev.type === "channel_mode") {
      this.modes.set(ev.channel, ev.mode);
      // As the desktop: a mesh has no dominant speaker of the SFU's.
      if (ev.mode !== "sfu") this.speakers.delete(ev.channel);
      if (mine) this.switchMode(ev.mode);
    }
    if (ev.type === "sfu_speaker") {
      // Only an SFU channel has a dominant speaker (the desktop shows it in the spotlight).
      this.modes.set(ev.channel, "sfu");
      this.speakers.set(ev.channel, ev.user ?? null);
    }
    if (ev.type === "voice_permissions" && ev.channel === this.voice.channel) {
      this.speakAllowed(ev.permissions?.speak !== false);
      this.videoAllowed = ev.permissions?.video !== false;
      if (!this.videoAllowed && this.cam) {
        this.setCamera(false).catch(() => {});
        this.notice(`Your camera went off: ${NO_VIDEO_HERE}`);
      }
      this.emit("servers-changed", null);
    }
    if (
      ev.type === "roster_leave" &&
      this.status.state === "connected" &&
      ev.user === this.status.user_id &&
      ev.channel === this.voice.channel &&
      ev.reason !== "left"
    ) {
      this.teardownVoice();
      this.notice(`You were taken out of the channel (${ev.reason}).`);
    }
    if (ev.type === "member_joined" || ev.type === "member_left" || ev.type === "member_updated")
      this.emit("members-changed", { server: ev.server });
    // Before the refetch nudge, so the UI still knows the server's name.
    if (ev.type === "server_removed") this.emit("server-gone", { server: ev.server, reason: ev.reason });
    if (SERVER_EVENTS.has(ev.type)) this.emit("servers-changed", null);
  }

  private notice(message: string) {
    this.voice = { ...this.voice, audio_notice: message };
    this.emit("audio-notice", { message });
  }

  // --- voice --------------------------------------------------------------------------------------

  private teardownVoice() {
    this.monitorStop?.();
    this.monitorStop = null;
    this.mesh?.close();
    this.mesh = null;
    // Leaving the channel (or losing the relay) takes me off the SFU: no `sfu_leave`.
    this.sfu?.close();
    this.sfu = null;
    this.stopVideos();
    this.paused.clear();
    this.endMove();
    this.roster.clear();
    for (const r of this.remote.values()) {
      r.el.pause();
      r.el.srcObject = null;
    }
    this.remote.clear();
    this.mic?.getTracks().forEach((t) => t.stop());
    this.mic = null;
    this.voice = { ...this.voice, channel: null, muted_by_channel: false };
  }

  /**
   * The channel's `speak` permission (in `joined`, then `voice_permissions`): without it the
   * microphone track is disabled (nothing is sent) and I show as muted by the channel; given
   * back, I stay muted until I unmute.
   */
  private speakAllowed(allowed: boolean) {
    if (allowed === !this.voice.muted_by_channel) return;
    this.voice = allowed ? { ...this.voice, muted_by_channel: false } : { ...this.voice, muted: true, muted_by_channel: true };
    this.mic?.getAudioTracks().forEach((t) => (t.enabled = !this.voice.muted));
  }

  private volumeOf(user: string): number {
    const p = this.voiceSettings().user_volumes[user] ?? 100;
    return Math.max(0, Math.min(1, p / 100));
  }

  private async joinVoice(channel: number): Promise<MyVoice> {
    const relay = await this.ready();
    if (this.voice.channel !== null) await this.leaveVoice();
    const s = this.voiceSettings();
    const mic = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, autoGainControl: true, noiseSuppression: s.noise_suppression },
      video: false,
    });
    let reply: Json;
    try {
      reply = await relay.request("channel_join", { channel, voice: { muted: this.voice.muted, deafened: this.voice.deafened } });
    } catch (e) {
      mic.getTracks().forEach((t) => t.stop());
      throw e;
    }
    const mode: VoiceMode = reply.mode ?? "mesh";
    this.modes.set(channel, mode);
    this.mic = mic;
    this.speakAllowed(reply.permissions?.speak !== false);
    this.videoAllowed = reply.permissions?.video !== false;
    mic.getAudioTracks().forEach((t) => (t.enabled = !this.voice.muted));
    const me = this.welcome.user.id as string;
    this.voice = { ...this.voice, channel, audio_notice: null };
    this.roster = new Set((reply.channel.roster as Json[]).map((e) => e.user.id as string).filter((u) => u !== me));
    if (mode === "sfu") this.startSfu(relay, channel, mic);
    else this.startMesh(relay, channel, mic);
    this.monitor(mic, relay);
    this.emit("servers-changed", null);
    return this.voice;
  }

  private iceServers(): RTCIceServer[] {
    const turn = this.welcome?.turn;
    return turn ? [{ urls: turn.urls, username: turn.username, credential: turn.credential }] : [];
  }

  /** Plays `user`'s audio (replacing what came before, e.g. over the other path in a move). */
  private playRemote(user: string, stream: MediaStream, via: "mesh" | "sfu", track: string) {
    const old = this.remote.get(user);
    if (old) {
      old.el.pause();
      old.el.srcObject = null;
    }
    const el = new Audio();
    el.autoplay = true;
    el.srcObject = stream;
    el.volume = this.volumeOf(user);
    el.muted = this.voice.deafened;
    el.play().catch(() => this.notice("The browser blocked audio playback: click anywhere on the page to hear the channel."));
    this.remote.set(user, { stream, el, via, track });
  }

  /** Stops `user`'s audio if it comes over `via` (a closing mesh connection leaves the SFU's alone). */
  private dropRemote(user: string, via: "mesh" | "sfu") {
    const r = this.remote.get(user);
    if (!r || r.via !== via) return;
    r.el.pause();
    r.el.srcObject = null;
    this.remote.delete(user);
  }

  /** The channel's mesh (§8): the smaller id offers to the others in it now. */
  private startMesh(relay: RelayConnection, channel: number, mic: MediaStream) {
    const me = this.welcome.user.id as string;
    this.mesh = new VoiceMesh(
      relay,
      me,
      channel,
      mic,
      {
        onTrack: (user, stream, track) => this.playRemote(user, stream, "mesh", track.id),
        onLeft: (user) => this.dropRemote(user, "mesh"),
        onError: (what, e) => console.warn(`[hum web] ${what}:`, e),
        onState: (user, state) => {
          if (state === "failed") this.notice(`The connection to ${user.slice(0, 8)} failed.`);
        },
      },
      this.iceServers(),
    );
    this.mesh.start([...this.roster]);
  }

  /** One connection to the relay's SFU (§8a): my microphone out, every member's audio in. */
  private startSfu(relay: RelayConnection, channel: number, mic: MediaStream) {
    const me = this.welcome.user.id as string;
    const sfu = new SfuConnection(
      relay,
      me,
      channel,
      mic,
      {
        onTrack: (user, _stream, track, name) => {
          if (track.kind === "audio") this.playRemote(user, new MediaStream([track]), "sfu", track.id);
          if (track.kind === "video" && this.sfu === sfu) this.showVideo(user, name, track);
        },
        onError: (what, e) => console.warn(`[hum web] ${what}:`, e),
        onState: (state) => {
          // As the native client: a failed SFU connection is made again (`sfu_join` replaces it).
          if (state === "failed" && this.sfu === sfu) {
            this.notice("The connection to the relay's SFU failed; reconnecting.");
            setTimeout(() => {
              if (this.sfu === sfu) sfu.join().catch((e) => this.notice(`Reconnecting to the SFU: ${e?.message ?? e}`));
            }, 500);
          }
        },
      },
      this.iceServers(),
    );
    this.sfu = sfu;
    // A camera as the desktop sends it on the SFU: three simulcast layers (`sfu_layers` says
    // which to encode); one already on goes into the join's offer.
    sfu.simulcast = true;
    if (this.cam && this.videoAllowed) sfu.setCamera(this.cam).catch(() => {});
    this.watchVideos();
    sfu
      .join()
      .then(() => {
        // A camera on before (a preview, or the mesh it came from): the roster says it is sent.
        if (this.cam && this.sfu === sfu) relay.request("voice_update", { voice: { video: true } }).catch(() => {});
      })
      .catch((e) => {
        if (this.sfu !== sfu) return;
        this.notice(`Could not connect to the relay's SFU: ${e?.message ?? e}`);
      });
  }

  /**
   * The relay moved my channel to `mode` (`channel_mode`, also sent right after joining): open
   * the new path at once, keep the old one until every member is heard over the new one (or
   * the move times out), as the native client does (docs/protocol.md §8a).
   */
  private switchMode(mode: VoiceMode) {
    const relay = this.relay;
    if (this.voice.channel === null || !relay || !this.mic) return;
    const current = this.move?.to ?? (this.sfu ? "sfu" : "mesh");
    if (mode === current) return;
    if (mode === "sfu" && !this.sfu) this.startSfu(relay, this.voice.channel, this.mic);
    if (mode === "mesh" && !this.mesh) this.startMesh(relay, this.voice.channel, this.mic);
    this.endMove();
    this.move = new PathMove(mode, performance.now());
    this.moveTimer = setInterval(() => this.finishMove(), 250);
  }

  private finishMove() {
    const move = this.move;
    if (!move || !move.done(this.roster, (u) => this.remote.get(u)?.via === move.to, performance.now())) return;
    this.endMove();
    if (move.to === "sfu") {
      this.mesh?.close();
      this.mesh = null;
    } else {
      this.sfu?.close(true);
      this.sfu = null;
      this.stopVideos();
      if (this.cam) {
        this.relay?.request("voice_update", { voice: { video: false } }).catch(() => {});
        this.notice("Your camera is not sent in this channel now: video in a small (mesh) channel is not in the browser yet.");
      }
    }
    for (const [user, r] of [...this.remote]) if (r.via !== move.to) this.dropRemote(user, r.via);
  }

  private endMove() {
    if (this.moveTimer) clearInterval(this.moveTimer);
    this.moveTimer = null;
    this.move = null;
  }

  /** My level meter and speaking indicator (sent to the roster), and the peers' link stats. */
  private monitor(mic: MediaStream, relay: RelayConnection) {
    const ctx = new AudioContext();
    const analyser = ctx.createAnalyser();
    analyser.fftSize = 2048;
    ctx.createMediaStreamSource(mic).connect(analyser);
    const buf = new Float32Array(analyser.fftSize);
    const gate = new SpeakingGate(this.voiceSettings().sensitivity_dbfs);
    const level = setInterval(() => {
      analyser.getFloatTimeDomainData(buf);
      const { rms, peak } = dbfs(buf);
      if (gate.update(rms, performance.now(), this.voice.muted)) {
        this.emit("self-speaking", { speaking: gate.speaking });
        relay.request("voice_update", { voice: { speaking: gate.speaking } }).catch(() => {});
      }
      this.levels?.onmessage({ rms_dbfs: rms, peak_dbfs: peak, speaking: gate.speaking, threshold_dbfs: gate.thresholdDbfs, live: true });
    }, 50);
    const stats = setInterval(() => {
      // On the SFU: one connection; each member's numbers are its track's inbound RTP.
      const pc = this.sfu?.pc;
      if (pc && !this.mesh)
        pc.getStats()
          .then((r) => {
            const entries: Parameters<typeof peerStatsView>[1] = [];
            r.forEach((e) => entries.push(e));
            for (const [user, x] of this.remote) {
              if (x.via !== "sfu") continue;
              const own = entries.filter((e) => e.type !== "inbound-rtp" || (e as { trackIdentifier?: string }).trackIdentifier === x.track);
              this.stats?.onmessage(peerStatsView(user, own));
            }
          })
          .catch(() => {});
      for (const p of this.mesh?.peers.values() ?? []) {
        if (p.left) continue;
        p.pc
          .getStats()
          .then((r) => {
            const entries: Parameters<typeof peerStatsView>[1] = [];
            r.forEach((e) => entries.push(e));
            this.stats?.onmessage(peerStatsView(p.user, entries));
          })
          .catch(() => {});
      }
    }, 2000);
    this.monitorStop = () => {
      clearInterval(level);
      clearInterval(stats);
      ctx.close().catch(() => {});
      if (gate.speaking) this.emit("self-speaking", { speaking: false });
      this.levels?.onmessage({ rms_dbfs: -100, peak_dbfs: -100, speaking: false, threshold_dbfs: gate.thresholdDbfs, live: false });
    };
  }

  // --- video --------------------------------------------------------------------------------------

  /** Shows `user`'s video track (`name`: the SFU's track id, camera or screen) in their tile. */
  private showVideo(user: string, name: string | null, track: MediaStreamTrack) {
    const id = this.videos.add(user, name, track);
    setMediaTrack(id, track);
    track.addEventListener?.("ended", () => {
      if (this.videos.tracks.get(track.id)?.track !== track) return;
      this.videos.tracks.delete(track.id);
      setMediaTrack(id, null);
      endStream(id);
    });
  }

  private dropVideos(user: string) {
    for (const id of this.videos.drop(user)) {
      setMediaTrack(id, null);
      endStream(id);
    }
  }

  /** Every 500 ms: which remote videos decoded a frame (their inbound RTP): those tiles show
   *  video, and one with no frame for 2 s goes back to the avatar (lib/videoStreams.ts). */
  private watchVideos() {
    if (this.videoTimer) return;
    this.videoTimer = setInterval(() => {
      const pc = this.sfu?.pc;
      if (!pc || this.videos.tracks.size === 0) return;
      pc.getStats()
        .then((r) => {
          const entries: InboundVideo[] = [];
          r.forEach((e) => entries.push(e));
          for (const id of this.videos.progressed(entries)) noteFrame(id);
        })
        .catch(() => {});
    }, 500);
  }

  private stopVideos() {
    if (this.videoTimer) clearInterval(this.videoTimer);
    this.videoTimer = null;
    for (const v of [...this.videos.tracks.values()]) this.dropVideos(v.user);
  }

  /**
   * My camera on (getUserMedia; on the SFU published as simulcast, in the roster as `video`) or
   * off (the device released, nothing sent, the roster says so). Refused in a mesh (not in the
   * browser yet) and where the channel's permissions deny video; a missing or refused camera is
   * a sentence.
   */
  private async setCamera(on: boolean): Promise<CameraView> {
    const inChannel = this.voice.channel !== null;
    if (!on) {
      const had = this.cam !== null;
      this.cam?.stop();
      this.cam = null;
      setMediaTrack(SELF_STREAM, null);
      await this.sfu?.setCamera(null);
      if (had && inChannel && this.relay && !this.relay.closed)
        await this.relay.request("voice_update", { voice: { video: false } }).catch(() => {});
      return cameraView(null);
    }
    if (this.cam) return cameraView(this.cam);
    if (inChannel && !this.videoAllowed) throw commandError("rejected", NO_VIDEO_HERE);
    if (inChannel && !this.sfu)
      throw notInBrowser("video in a small (mesh) channel is not in the browser yet; it works once the channel is on the relay's SFU");
    let stream: MediaStream;
    try {
      if (!navigator.mediaDevices?.getUserMedia) throw Object.assign(new Error("no camera access (not a secure page?)"), { name: "SecurityError" });
      stream = await navigator.mediaDevices.getUserMedia({
        audio: false,
        video: { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } },
      });
    } catch (e) {
      throw cameraError(e);
    }
    const track = stream.getVideoTracks()[0];
    if (!track) throw cameraError({ name: "NotFoundError" });
    this.cam = track;
    setMediaTrack(SELF_STREAM, track);
    if (this.sfu) {
      await this.sfu.setCamera(track);
      await this.relay?.request("voice_update", { voice: { video: true } }).catch(() => {});
    }
    return cameraView(track);
  }

  private async leaveVoice(): Promise<MyVoice> {
    if (this.voice.channel === null) return this.voice;
    const relay = this.relay;
    this.teardownVoice();
    await relay?.request("channel_leave").catch(() => {});
    this.emit("servers-changed", null);
    return this.voice;
  }

  private async setVoiceState(muted: boolean, deafened: boolean): Promise<MyVoice> {
    // Unmuting is refused while the channel does not let me speak (the button says so).
    const m = muted || deafened || this.voice.muted_by_channel;
    this.voice = { ...this.voice, muted: m, deafened };
    this.mic?.getAudioTracks().forEach((t) => (t.enabled = !m));
    for (const r of this.remote.values()) r.el.muted = deafened;
    if (this.voice.channel !== null) await this.connected().request("voice_update", { voice: { muted: m, deafened } });
    return this.voice;
  }

  // --- servers ------------------------------------------------------------------------------------

  private async serverView(s: Json): Promise<ServerView> {
    const list = await this.connected().request("channel_list", { server: s.id });
    return {
      id: s.id,
      name: s.name,
      role: s.role,
      channels: (list.channels as Json[]).map((c) =>
        channelOf(
          c,
          this.modes.get(c.id) ?? "mesh",
          this.speakers.get(c.id) ?? null,
          c.id === this.voice.channel ? [...this.paused.values()] : [],
        ),
      ),
    };
  }

  private async servers(): Promise<ServerView[]> {
    const reply = await this.connected().request("server_list");
    return Promise.all((reply.servers as Json[]).map((s) => this.serverView(s)));
  }

  /** The invite in this page's address (`/invite/CODE`), once. */
  takeLinks(): LinkView[] {
    if (this.linksTaken || !this.location) return [];
    this.linksTaken = true;
    const m = this.location.pathname.match(/^\/invite\/([A-Za-z0-9_-]{1,64})\/?$/);
    return m ? [{ kind: "invite", code: m[1], link: this.location.href }] : [];
  }

  // --- the command table --------------------------------------------------------------------------

  handlers(): Handlers {
    return {
      identity_get: async () => {
        const id = await this.me();
        // A returning visitor: connect as the desktop back end does at start.
        if (id && this.status.state === "offline") this.connect().catch(() => {});
        return id ? this.info(id) : null;
      },
      identity_create: async ({ displayName }: { displayName: string }) => {
        const name = checkDisplayName(displayName);
        if (await this.me()) throw commandError("identity_exists", "This browser already has an identity.");
        const id = await generateIdentity(name);
        await saveIdentity(id);
        this.identity = id;
        return this.info(id);
      },
      identity_rename: async ({ displayName }: { displayName: string }) => {
        const name = checkDisplayName(displayName);
        const id = await this.me();
        if (!id) throw commandError("no_identity", "Create your identity first.");
        const next = { ...id, display_name: name };
        await saveIdentity(next);
        this.identity = next;
        if (this.status.state === "connected") await this.connected().request("set_profile", { display_name: name });
        return this.info(next);
      },
      settings_get: (): AppSettings => ({
        relay_url: this.relayUrl(),
        bandwidth: DEFAULT_BANDWIDTH,
        bandwidth_report: EMPTY_REPORT,
        bandwidth_notice: null,
      }),
      relay_url_set: ({ url }: { url: string }) => {
        const u = normaliseRelayUrl(url);
        this.store.setItem(KEY_RELAY, u);
        return u;
      },
      relay_connect: () => this.connect(),
      relay_status: () => this.status,
      servers_list: () => (this.status.state === "connected" ? this.servers() : []),
      // The page hears every server it is in (it never sends `subscribe`), so every server comes in full.
      servers_watch: () => null,
      server_create: async ({ nameText }: { nameText: string }) => {
        const r = await this.connected().request("server_create", { name: nameText.trim() });
        return this.serverView(r.server);
      },
      channel_create: async ({ server, nameText, maxParticipants }: { server: number; nameText: string; maxParticipants: number | null }) => {
        const fields: Record<string, unknown> = { server, name: nameText.trim() };
        if (maxParticipants !== null) fields.max_participants = maxParticipants;
        const r = await this.connected().request("channel_create", fields);
        return channelOf(r.channel, "mesh", null);
      },
      invite_create: async ({ server }: { server: number }) => {
        const r = await this.connected().request("invite_create", { server });
        return r.invite.code as string;
      },
      server_members: async ({ server }: { server: number }) => {
        const all: Json[] = [];
        let after: string | undefined;
        for (;;) {
          const fields: Record<string, unknown> = { server, limit: 1000 };
          if (after) fields.after = after;
          const r = await this.connected().request("member_list", fields);
          all.push(...(r.members ?? []));
          if (!r.next || r.next === after) break;
          after = r.next;
        }
        const rank: Record<string, number> = { owner: 2, admin: 1, member: 0 };
        return all
          .map((m) => ({ user_id: m.user.id, display_name: m.user.display_name, role: m.role, online: !!m.online }))
          .sort(
            (a, b) =>
              rank[b.role] - rank[a.role] ||
              Number(b.online) - Number(a.online) ||
              a.display_name.toLowerCase().localeCompare(b.display_name.toLowerCase()),
          );
      },
      member_role_set: async ({ server, userId, admin }: { server: number; userId: string; admin: boolean }) => {
        await this.connected().request("member_set_role", { server, user: userId, role: admin ? "admin" : "member" });
        return null;
      },
      member_remove: async ({ server, userId, ban }: { server: number; userId: string; ban: boolean }) => {
        await this.connected().request(ban ? "member_ban" : "member_kick", { server, user: userId });
        return null;
      },
      server_bans: async ({ server }: { server: number }) => {
        const r = await this.connected().request("ban_list", { server });
        return ((r.users ?? []) as Json[])
          .map((u) => ({ user_id: u.id as string, display_name: u.display_name as string }))
          .sort(
            (a, b) =>
              a.display_name.toLowerCase().localeCompare(b.display_name.toLowerCase()) || a.user_id.localeCompare(b.user_id),
          );
      },
      member_unban: async ({ server, userId }: { server: number; userId: string }) => {
        await this.connected().request("member_unban", { server, user: userId });
        return null;
      },
      server_rename: async ({ server, nameText }: { server: number; nameText: string }) => {
        const name = nameText.trim();
        if (!name) throw commandError("invalid_input", "Server name: a name cannot be empty.");
        await this.connected().request("server_rename", { server, name });
        this.emit("servers-changed", null);
        return null;
      },
      server_delete: async ({ server }: { server: number }) => {
        // The relay takes anyone out of its channels (roster_leave "deleted", handled in onEvent).
        await this.connected().request("server_delete", { server });
        this.emit("servers-changed", null);
        return null;
      },
      server_leave: async ({ server }: { server: number }) => {
        const relay = this.connected();
        // My own leave comes back as roster_leave "left", which onEvent leaves alone: stop the
        // voice of this server's channel first.
        if (this.voice.channel !== null) {
          const list = await relay.request("channel_list", { server });
          if ((list.channels as Json[]).some((c) => c.id === this.voice.channel)) await this.leaveVoice();
        }
        await relay.request("server_leave", { server });
        this.emit("servers-changed", null);
        return null;
      },
      channel_configure: async ({
        channel,
        maxParticipants,
        permissions,
        meshLimit,
      }: {
        channel: number;
        maxParticipants: number;
        permissions: unknown;
        meshLimit: number | null;
      }) => {
        if (!Number.isInteger(maxParticipants) || maxParticipants < 1 || maxParticipants > 1000)
          throw commandError("invalid_input", "Max participants must be between 1 and 1000.");
        // The relay clears a channel's limit when sent its own or more (docs/protocol.md).
        await this.connected().request("channel_configure", {
          channel,
          max_participants: maxParticipants,
          permissions,
          mesh_limit: meshLimit ?? 4294967295,
        });
        return null;
      },
      invite_join: async ({ code }: { code: string }) => {
        const c = inviteCode(code);
        if (!c) throw commandError("invalid_input", `"${code}" is not an invite code or link.`);
        const r = await (await this.ready()).request("invite_join", { code: c });
        this.emit("servers-changed", null);
        return this.serverView(r.server);
      },
      channel_join: ({ channel }: { channel: number }) => this.joinVoice(channel),
      channel_leave: () => this.leaveVoice(),
      voice_state_set: ({ muted, deafened }: { muted: boolean; deafened: boolean }) => this.setVoiceState(muted, deafened),
      my_voice: () => this.voice,
      user_volume_set: ({ userId, percent }: { userId: string; percent: number }) => {
        if (!Number.isFinite(percent) || percent < 0 || percent > 200) throw commandError("invalid_input", "Volume is 0-200 %.");
        const s = this.voiceSettings();
        this.store.setItem(KEY_VOICE, JSON.stringify({ ...s, user_volumes: { ...s.user_volumes, [userId]: Math.round(percent) } }));
        const r = this.remote.get(userId);
        if (r) r.el.volume = this.volumeOf(userId);
        return null;
      },
      voice_settings_get: () => this.voiceSettings(),
      voice_settings_set: ({ settings }: { settings: VoiceSettings }) => {
        if (settings.transmit_mode === "push_to_talk")
          throw notInBrowser("push-to-talk needs a global hotkey, which a web page cannot register (voice activity only)");
        const next = { ...this.voiceSettings(), ...settings, ptt_shortcut: "" };
        this.store.setItem(KEY_VOICE, JSON.stringify(next));
        return next;
      },
      devices_list: async (): Promise<DeviceView[]> => {
        const all = await navigator.mediaDevices.enumerateDevices();
        return all
          .filter((d) => d.kind === "audioinput" || d.kind === "audiooutput")
          .map((d) => ({
            id: d.deviceId,
            name: d.label || (d.kind === "audioinput" ? "Microphone" : "Speaker"),
            input: d.kind === "audioinput",
            output: d.kind === "audiooutput",
            default_input: d.kind === "audioinput" && d.deviceId === "default",
            default_output: d.kind === "audiooutput" && d.deviceId === "default",
          }));
      },
      links_take: () => this.takeLinks(),
      // There is no tray in a browser: the command's answer says so (the UI shows no tray entry).
      tray_sync: () => false,
      // My level (in a channel) and the peers' link statistics (every 2 s) come on these.
      levels_subscribe: ({ onLevel }: { onLevel: Channel<LevelSample> }) => {
        this.levels = onLevel;
        return null;
      },
      stats_subscribe: ({ onStats }: { onStats: Channel<PeerStatsView> }) => {
        this.stats = onStats;
        return null;
      },
      // Video in the browser is decoded by its own WebRTC and shown from the tracks
      // (lib/videoStreams.ts): no encoded frames come on this channel.
      video_subscribe: () => null,
      camera_set: ({ on }: { on: boolean }) => this.setCamera(on),
      // The layer a tile needs of a member's camera (the shared Stage's `layerPlan`): on the SFU
      // the relay is asked (`sfu_quality`). In a mesh the browser receives no video yet.
      video_quality_set: async ({ streamId, quality }: { streamId: string; quality: "high" | "low" | "off" }) => {
        const user = streamId.split("/")[0];
        const sfu = this.sfu;
        if (!sfu || !isUserId(user) || !["high", "low", "off"].includes(quality)) return null;
        // After my join: the relay refuses it before I am on the SFU.
        await sfu.idle();
        if (this.sfu === sfu) await this.connected().request("sfu_quality", { user, quality });
        return null;
      },
      // The browser's WebRTC asks the SFU for keyframes itself (PLI).
      video_keyframe: () => null,
      input_monitor_stop: () => null,
      // Streams are listed (the channel list shows who is live); watching them is not in the
      // browser yet (live_watch says so).
      live_list: async ({ server }: { server: number }): Promise<LiveStreamView[]> => {
        const r = await this.connected().request("stream_list", { server });
        return (r.streams as Json[]).map((s) => ({
          id: s.id,
          server: s.server,
          channel: s.channel,
          title: s.title,
          streamer_id: s.streamer.id,
          streamer_name: s.streamer.display_name,
          bitrate: s.bitrate,
          viewers: s.viewers ?? 0,
          recording: !!s.recording,
          started_ms: s.started_ms ?? 0,
        }));
      },
      live_dismiss: () => null,
    };
  }
}
