// A voice channel's mesh in the browser (docs/protocol.md §8): one RTCPeerConnection per other
// participant, the smaller user id offers, trickle ICE over the relay's `signal` requests,
// `renegotiate` for an ICE restart asked by the answering side, `bye` and `roster_leave` close.
// The same logic the interop test page (tests/web/voice.js) was written with, as a class the web
// back end and that page share.

import type { Json } from "./protocol";

/** The part of the relay connection the mesh needs. */
export type Signaller = { request(type: string, fields?: Record<string, unknown>): Promise<Json> };

export type MeshHooks = {
  /** A remote track arrived (play it, record it). */
  onTrack?: (user: string, stream: MediaStream, track: MediaStreamTrack) => void;
  /** A connection changed state (`connected`, `failed`...). */
  onState?: (user: string, state: RTCPeerConnectionState) => void;
  /** A peer's connection closed (it left, or said `bye`). */
  onLeft?: (user: string) => void;
  /** Runs before a peer's connection closes (to keep its last stats). */
  beforeClose?: (p: MeshPeer) => Promise<void>;
  /** Something failed; the mesh goes on with the other peers. */
  onError?: (what: string, e: unknown) => void;
};

export type MeshPeer = {
  user: string;
  pc: RTCPeerConnection;
  offerer: boolean;
  sdpSent: boolean;
  queued: Json[];
  connectedAt: number | null;
  left: boolean;
  states: RTCPeerConnectionState[];
  candidatesSent: number;
  candidatesReceived: number;
  /** ICE credentials of every description applied, in order (ICE restarts renew them). */
  localUfrags: (string | null)[];
  remoteUfrags: (string | null)[];
  restartedAt: number | null;
};

export const ufrag = (sdp: string): string | null => (sdp.match(/^a=ice-ufrag:(.*)$/m) || [])[1]?.trim() ?? null;

/** The SDP session id (second field of the `o=` line): kept for a connection's whole life, so an
 *  offer with another one comes from a new connection, not a renegotiation (docs/protocol.md §8,
 *  "Coming back"). */
export const sessionId = (sdp: string): string | null => (sdp.match(/^o=\S+ (\d+) /m) || [])[1] ?? null;

/** Whether an offer comes from another connection than the one `current` (our connection's remote
 *  description) was negotiated with. Unknown either side: no. */
export const fromNewConnection = (current: string | undefined, offer: string): boolean => {
  const a = current ? sessionId(current) : null;
  const b = sessionId(offer);
  return a !== null && b !== null && a !== b;
};

/** The mesh rule: of two participants, the one with the smaller id (hex, compared as text) offers. */
export const offersTo = (me: string, other: string): boolean => me < other;

/** An RTCIceCandidate as the protocol's `ice` payload (null: nothing to send). */
export function candidatePayload(c: RTCIceCandidate | null): Json | null {
  if (c && c.candidate)
    return {
      kind: "ice",
      candidate: c.candidate,
      sdp_mid: c.sdpMid,
      sdp_mline_index: c.sdpMLineIndex,
      username_fragment: c.usernameFragment,
    };
  return c ? null : { kind: "end_of_candidates" };
}

export class VoiceMesh {
  readonly peers = new Map<string, MeshPeer>();
  private chain: Promise<void> = Promise.resolve();
  private closed = false;

  constructor(
    private relay: Signaller,
    readonly me: string,
    readonly channel: number,
    private local: MediaStream,
    private hooks: MeshHooks = {},
    private iceServers: RTCIceServer[] = [],
  ) {}

  private fail(what: string, e: unknown) {
    this.hooks.onError?.(what, e);
  }

  /** Runs `f` after everything queued before it (an answer before the candidates after it). */
  private queue(f: () => Promise<void>) {
    this.chain = this.chain.then(f).catch((e) => this.fail("mesh", e));
  }

  private signal(to: string, payload: Json) {
    return this.relay
      .request("signal", { to, scope: { channel: this.channel }, payload })
      .catch((e) => this.fail(`signal ${payload.kind} to ${to}`, e));
  }

  /** Connects to the others already in the channel (the join reply's roster). */
  start(others: string[]) {
    this.queue(async () => {
      for (const u of others) {
        if (u !== this.me && offersTo(this.me, u)) await this.offerTo(u).catch((e) => this.fail(`offer to ${u}`, e));
      }
    });
  }

  /** Takes a relay event; returns whether it was this channel's. */
  handleEvent(ev: Json): boolean {
    if (this.closed) return false;
    if (ev.type === "signal" && ev.scope?.channel === this.channel) {
      this.queue(() => this.onSignal(ev.from, ev.payload));
      return true;
    }
    if (ev.type === "roster_join" && ev.channel === this.channel) {
      const u = ev.entry.user.id;
      if (u !== this.me && offersTo(this.me, u) && !this.peers.has(u)) this.queue(() => this.offerTo(u));
      return true;
    }
    if (ev.type === "roster_leave" && ev.channel === this.channel) {
      if (ev.user !== this.me) this.queue(() => this.closePeer(ev.user));
      return true;
    }
    return false;
  }

  private peer(user: string, offerer: boolean): MeshPeer {
    const existing = this.peers.get(user);
    if (existing && !existing.left) return existing;
    const pc = new RTCPeerConnection({ iceServers: this.iceServers });
    const p: MeshPeer = {
      user,
      pc,
      offerer,
      sdpSent: false,
      queued: [],
      connectedAt: null,
      left: false,
      states: [],
      candidatesSent: 0,
      candidatesReceived: 0,
      localUfrags: [],
      remoteUfrags: [],
      restartedAt: null,
    };
    this.peers.set(user, p);
    for (const t of this.local.getAudioTracks()) pc.addTrack(t, this.local);
    pc.onicecandidate = (e) => {
      // Trickle ICE: the native side queues candidates until it has our description.
      const payload = candidatePayload(e.candidate);
      if (!payload) return;
      if (payload.kind === "ice") p.candidatesSent++;
      if (p.sdpSent) this.signal(user, payload);
      else p.queued.push(payload);
    };
    pc.ontrack = (e) => this.hooks.onTrack?.(user, e.streams[0] || new MediaStream([e.track]), e.track);
    pc.onconnectionstatechange = () => {
      p.states.push(pc.connectionState);
      if (pc.connectionState === "connected" && !p.connectedAt) p.connectedAt = performance.now();
      this.hooks.onState?.(user, pc.connectionState);
    };
    return p;
  }

  private async sendSdp(p: MeshPeer, kind: "offer" | "answer") {
    const sdp = p.pc.localDescription!.sdp;
    p.localUfrags.push(ufrag(sdp));
    await this.signal(p.user, { kind, sdp });
    p.sdpSent = true;
    for (const q of p.queued.splice(0)) this.signal(p.user, q);
  }

  private async offerTo(user: string) {
    const p = this.peer(user, true);
    await p.pc.setLocalDescription(await p.pc.createOffer());
    await this.sendSdp(p, "offer");
  }

  /** ICE restart mid-call: the offering side re-offers with fresh credentials; the answering side
   *  asks the other to (`renegotiate`), as the native engine does. */
  restartIce(user: string) {
    this.queue(async () => {
      const p = this.peers.get(user);
      if (!p || p.left) return;
      p.restartedAt = performance.now();
      if (p.offerer) {
        await p.pc.setLocalDescription(await p.pc.createOffer({ iceRestart: true }));
        await this.sendSdp(p, "offer");
      } else {
        await this.signal(p.user, { kind: "renegotiate" });
      }
    });
  }

  private async onSignal(from: string, payload: Json) {
    switch (payload?.kind) {
      case "offer": {
        const old = this.peers.get(from);
        if (old && !old.left && fromNewConnection(old.pc.remoteDescription?.sdp, payload.sdp)) {
          // The sender's relay session moved and it made a new connection: renegotiating ours
          // would not redo DTLS. Replace it quietly (it never left; its new track replaces the
          // old one's audio).
          old.left = true;
          old.pc.close();
        }
        const p = this.peer(from, false);
        p.remoteUfrags.push(ufrag(payload.sdp));
        await p.pc.setRemoteDescription({ type: "offer", sdp: payload.sdp });
        await p.pc.setLocalDescription(await p.pc.createAnswer());
        await this.sendSdp(p, "answer");
        break;
      }
      case "answer": {
        const p = this.peers.get(from);
        if (!p || p.left) break;
        p.remoteUfrags.push(ufrag(payload.sdp));
        await p.pc.setRemoteDescription({ type: "answer", sdp: payload.sdp });
        break;
      }
      case "ice": {
        const p = this.peers.get(from);
        if (!p || p.left) break;
        p.candidatesReceived++;
        await p.pc.addIceCandidate({
          candidate: payload.candidate,
          sdpMid: payload.sdp_mid ?? null,
          sdpMLineIndex: payload.sdp_mline_index ?? null,
          usernameFragment: payload.username_fragment ?? null,
        });
        break;
      }
      case "renegotiate": {
        const p = this.peers.get(from);
        if (p && !p.left && p.offerer) {
          await p.pc.setLocalDescription(await p.pc.createOffer({ iceRestart: true }));
          await this.sendSdp(p, "offer");
        }
        break;
      }
      case "bye":
        await this.closePeer(from);
        break;
      default:
        // e2ee_key, video_quality, camera...: not handled by the browser yet.
        break;
    }
  }

  /** Closes the connection to one peer (`beforeClose` runs first). */
  async closePeer(user: string) {
    const p = this.peers.get(user);
    if (!p || p.left) return;
    p.left = true;
    if (this.hooks.beforeClose) await this.hooks.beforeClose(p).catch(() => {});
    p.pc.close();
    this.hooks.onLeft?.(user);
  }

  /** Waits for everything queued so far. */
  idle(): Promise<void> {
    return this.chain;
  }

  close() {
    this.closed = true;
    for (const p of this.peers.values()) {
      p.left = true;
      p.pc.close();
    }
  }
}
