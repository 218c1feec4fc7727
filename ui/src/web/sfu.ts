// A voice channel on the relay's SFU in the browser (docs/protocol.md §8a, docs/sfu.md): one
// RTCPeerConnection to the SFU (ICE-lite, one host candidate in its SDP, no trickle). We offer
// our own tracks (`sfu_join`) and apply its answer; the others' tracks then come in the SFU's
// offers (`sfu_offer` events, one `sendonly` m-line per track whose `msid` stream id is the
// owner's user id), which we answer (`sfu_answer`). The same order as the native client
// (crates/hum-engine/src/voice/sfu.rs and link.rs). The web back end and the interop test page
// (tests/web/voice.js) share it.

import type { Json } from "./protocol";
import type { Signaller } from "./mesh";

export type SfuHooks = {
  /** A remote track arrived; `user` is its owner (the `msid` stream id), `name` the track id
   *  its m-line in the SFU's offer gives it (`t<n>` a camera, `screen-t<n>` a screen share). */
  onTrack?: (user: string, stream: MediaStream, track: MediaStreamTrack, name: string | null) => void;
  /** The connection to the SFU changed state (`connected`, `failed`...). */
  onState?: (state: RTCPeerConnectionState) => void;
  /** Something failed (a renegotiation, a request). */
  onError?: (what: string, e: unknown) => void;
};

/** What the SFU's offer says of one forwarded track. */
export type SfuTrack = { mid: string; kind: string; user: string; track: string | null; direction: string | null };

/** A Hum user id: 32 bytes, lower-case hex. */
export const isUserId = (s: unknown): s is string => typeof s === "string" && /^[0-9a-f]{64}$/.test(s);

/**
 * The m-lines of an SFU offer that carry another member's track, by mid: the owner from the
 * `msid` stream id (`a=msid:<user> <track>`, or the older `a=ssrc:N msid:` form). M-lines with no
 * owner (ours, echoed back with `recvonly`) are left out.
 */
export function sfuTracks(sdp: string): SfuTrack[] {
  const out: SfuTrack[] = [];
  const sections = sdp.split(/\r?\n(?=m=)/).slice(1);
  for (const sec of sections) {
    const kind = (sec.match(/^m=(\w+)/) || [])[1] ?? "";
    const mid = (sec.match(/^a=mid:(\S+)/m) || [])[1];
    const msid = sec.match(/^a=msid:(\S+)(?: (\S+))?/m) || sec.match(/^a=ssrc:\d+ msid:(\S+)(?: (\S+))?/m);
    const direction = (sec.match(/^a=(sendrecv|sendonly|recvonly|inactive)\s*$/m) || [])[1] ?? null;
    if (!mid || !msid || !isUserId(msid[1])) continue;
    out.push({ mid, kind, user: msid[1], track: msid[2] ?? null, direction });
  }
  return out;
}

/** The owner of a track the SFU forwards: the stream id it came with, else its m-line's msid in
 *  the SFU's offer (`mid`). Null: not another member's track. */
export function trackOwner(streamIds: string[], mid: string | null, remoteSdp: string | undefined): string | null {
  const byStream = streamIds.find(isUserId);
  if (byStream) return byStream;
  if (!mid || !remoteSdp) return null;
  return sfuTracks(remoteSdp).find((t) => t.mid === mid)?.user ?? null;
}

/** The simulcast layers a camera is published in (docs/protocol.md `sfu_quality`): a quarter, half
 *  and full size, low to high. */
export const SIMULCAST: RTCRtpEncodingParameters[] = [
  { rid: "q", scaleResolutionDownBy: 4, maxBitrate: 150_000 },
  { rid: "h", scaleResolutionDownBy: 2, maxBitrate: 500_000 },
  { rid: "f", maxBitrate: 1_500_000 },
];

/** `sfu_layers`: which of our layers to encode (`rids` the ones some subscriber takes; an empty
 *  list pauses them all). Returns whether anything changed. */
export function applyLayers(encodings: RTCRtpEncodingParameters[], rids: string[]): boolean {
  let changed = false;
  for (const e of encodings) {
    const active = e.rid === undefined || rids.includes(e.rid);
    if (e.active !== active) {
      e.active = active;
      changed = true;
    }
  }
  return changed;
}

/** Makes the connection (tests give a fake). */
export type PeerFactory = (config: RTCConfiguration) => RTCPeerConnection;

/** Waits until the connection has gathered its candidates (at most `ms`): the SFU takes none
 *  trickled, so they go in the SDP, as the native client sends them. */
function gathered(pc: RTCPeerConnection, ms: number): Promise<void> {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      pc.removeEventListener("icegatheringstatechange", check);
      resolve();
    }
    function check() {
      if (pc.iceGatheringState === "complete") done();
    }
    pc.addEventListener("icegatheringstatechange", check);
  });
}

export class SfuConnection {
  pc: RTCPeerConnection | null = null;
  /** Connection states in order (tests and diagnostics). */
  readonly states: RTCPeerConnectionState[] = [];
  /** Owners of the tracks received, in arrival order. */
  readonly heard = new Set<string>();
  /** SFU offers answered. */
  offersAnswered = 0;
  connectedAt: number | null = null;
  /** Publish a camera as simulcast layers (`SIMULCAST`) instead of one encoding. */
  simulcast = false;
  /** The `sfu_layers` lists received for our camera, in order. */
  readonly layers: string[][] = [];
  private chain: Promise<void> = Promise.resolve();
  private closed = false;
  /** My camera (null: none or off), its sender and the track id its m-line's `msid` names
   *  (what `sfu_layers` says; a camera turned off and on again keeps the first one's). */
  private camera: MediaStreamTrack | null = null;
  private cameraSender: RTCRtpSender | null = null;
  private cameraMsid: string | null = null;

  constructor(
    private relay: Signaller,
    readonly me: string,
    readonly channel: number,
    private local: MediaStream,
    private hooks: SfuHooks = {},
    private iceServers: RTCIceServer[] = [],
    private makePeer: PeerFactory = (c) => new RTCPeerConnection(c),
    private gatherMs = 2000,
  ) {}

  private fail(what: string, e: unknown) {
    this.hooks.onError?.(what, e);
  }

  /** Runs `f` after everything queued before it (an SFU offer after our join's answer). */
  private queue(f: () => Promise<void>): Promise<void> {
    const next = this.chain.then(f);
    this.chain = next.catch((e) => this.fail("sfu", e));
    return next;
  }

  /** Connects: our tracks offered in `sfu_join`, the SFU's answer applied. Joining again
   *  replaces the connection (after an ICE failure), as the relay does. */
  join(): Promise<void> {
    return this.queue(async () => {
      if (this.closed) return;
      this.pc?.close();
      const pc = this.makePeer({ iceServers: this.iceServers, bundlePolicy: "max-bundle", rtcpMuxPolicy: "require" });
      this.pc = pc;
      // Our microphone (and camera, if the stream has one): sendrecv, so the SFU may reuse the
      // m-line's receive side.
      for (const t of this.local.getTracks()) {
        if (t.kind === "video" && this.simulcast)
          pc.addTransceiver(t, { direction: "sendrecv", streams: [this.local], sendEncodings: SIMULCAST.map((e) => ({ ...e })) });
        else pc.addTrack(t, this.local);
      }
      this.cameraSender = null;
      this.cameraMsid = null;
      if (this.camera) this.addCamera(pc, this.camera);
      pc.ontrack = (e) => {
        if (pc !== this.pc) return;
        const user = trackOwner(
          e.streams.map((s) => s.id),
          e.transceiver?.mid ?? null,
          pc.remoteDescription?.sdp,
        );
        if (!user || user === this.me) return;
        this.heard.add(user);
        const mid = e.transceiver?.mid ?? null;
        const name = (mid && sfuTracks(pc.remoteDescription?.sdp ?? "").find((t) => t.mid === mid)?.track) || null;
        this.hooks.onTrack?.(user, e.streams.find((s) => s.id === user) ?? new MediaStream([e.track]), e.track, name);
      };
      pc.onconnectionstatechange = () => {
        if (pc !== this.pc) return;
        this.states.push(pc.connectionState);
        if (pc.connectionState === "connected" && !this.connectedAt) this.connectedAt = performance.now();
        this.hooks.onState?.(pc.connectionState);
      };
      await pc.setLocalDescription(await pc.createOffer());
      await gathered(pc, this.gatherMs);
      const reply = await this.relay.request("sfu_join", { channel: this.channel, sdp: pc.localDescription!.sdp });
      if (pc !== this.pc) return;
      await pc.setRemoteDescription({ type: "answer", sdp: reply.sdp });
    });
  }

  /** Takes a relay event; returns whether it was this channel's SFU offer or layer list. */
  handleEvent(ev: Json): boolean {
    if (this.closed || ev?.channel !== this.channel) return false;
    if (ev.type === "sfu_layers" && typeof ev.track === "string" && Array.isArray(ev.rids)) {
      const rids = (ev.rids as unknown[]).filter((r): r is string => typeof r === "string");
      const track = ev.track as string;
      this.queue(() => this.setLayers(track, rids));
      return true;
    }
    if (ev.type !== "sfu_offer" || typeof ev.sdp !== "string") return false;
    const sdp = ev.sdp as string;
    this.queue(() => this.answer(sdp));
    return true;
  }

  private async answer(sdp: string) {
    const pc = this.pc;
    if (this.closed || !pc) return;
    await pc.setRemoteDescription({ type: "offer", sdp });
    await pc.setLocalDescription(await pc.createAnswer());
    await gathered(pc, this.gatherMs);
    if (pc !== this.pc) return;
    await this.relay.request("sfu_answer", { sdp: pc.localDescription!.sdp });
    this.offersAnswered++;
  }

  /** My camera on `pc`: one more m-line (`sendrecv`, simulcast if asked), in my stream. */
  private addCamera(pc: RTCPeerConnection, track: MediaStreamTrack) {
    const sendEncodings = this.simulcast ? SIMULCAST.map((e) => ({ ...e })) : undefined;
    const tr = pc.addTransceiver(track, { direction: "sendrecv", streams: [this.local], ...(sendEncodings ? { sendEncodings } : {}) });
    this.cameraSender = tr.sender;
    this.cameraMsid = track.id;
  }

  /**
   * Publishes my camera (`track`), or stops sending it (null). The first camera adds an m-line
   * (a renegotiation: `sfu_offer`); off and on again swap the track on the same sender, as the
   * native client keeps its video track (nothing is sent while off). Before `join`, the camera
   * goes into the join's offer.
   */
  setCamera(track: MediaStreamTrack | null): Promise<void> {
    return this.queue(async () => {
      if (this.closed) return;
      this.camera = track;
      const pc = this.pc;
      if (!pc) return;
      if (this.cameraSender) {
        await this.cameraSender.replaceTrack(track);
        return;
      }
      if (!track) return;
      this.addCamera(pc, track);
      await this.renegotiate(pc);
    });
  }

  /** Offers my tracks again (`sfu_offer` request). On glare (an SFU offer waits for my answer,
   *  queued behind this) my offer is rolled back and made again after that answer. */
  private async renegotiate(pc: RTCPeerConnection) {
    if (this.closed || pc !== this.pc) return;
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc, this.gatherMs);
    let reply: Json;
    try {
      reply = await this.relay.request("sfu_offer", { sdp: pc.localDescription!.sdp });
    } catch (e) {
      if (pc !== this.pc || !/glare/i.test(String((e as Error)?.message ?? e))) throw e;
      await pc.setLocalDescription({ type: "rollback" });
      this.queue(() => this.renegotiate(pc));
      return;
    }
    if (pc !== this.pc) return;
    await pc.setRemoteDescription({ type: "answer", sdp: reply.sdp });
    this.renegotiated++;
  }

  /** My own renegotiations that got the SFU's answer (tests, diagnostics). */
  renegotiated = 0;

  /** Encodes only the layers of our camera `track` (its msid track id) someone takes. */
  private async setLayers(track: string, rids: string[]) {
    const sender =
      track === this.cameraMsid && this.cameraSender ? this.cameraSender : this.pc?.getSenders().find((s) => s.track?.id === track);
    if (!sender) return;
    this.layers.push(rids);
    const params = sender.getParameters();
    if (applyLayers(params.encodings, rids)) await sender.setParameters(params);
  }

  /** Waits for everything queued so far. */
  idle(): Promise<void> {
    return this.chain;
  }

  /** Closes the connection; with `sfuLeave`, tells the relay (staying in the channel, which went
   *  back to mesh). Leaving the channel does that by itself. */
  close(sfuLeave = false) {
    if (this.closed) return;
    this.closed = true;
    this.pc?.close();
    if (sfuLeave) this.relay.request("sfu_leave").catch((e) => this.fail("sfu_leave", e));
  }
}

/**
 * A move between mesh and SFU (the relay's `channel_mode` while I am in the channel), as the
 * native client does it: the new path opens at once and the old one stays until every other
 * member is heard over the new one plus `GRACE_MS` (so they hear me over it too), or
 * `TIMEOUT_MS` at most.
 */
export class PathMove {
  static readonly GRACE_MS = 1000;
  static readonly TIMEOUT_MS = 4000;

  constructor(
    readonly to: "mesh" | "sfu",
    readonly since: number,
  ) {}

  /** Whether the old path may close now: `others` the other members, `heard` whether one is
   *  heard over the new path. */
  done(others: Iterable<string>, heard: (user: string) => boolean, now: number): boolean {
    const waited = now - this.since;
    if (waited >= PathMove.TIMEOUT_MS) return true;
    return waited >= PathMove.GRACE_MS && [...others].every(heard);
  }
}
