// Video in the browser back end: the others' cameras and screen shares the page receives on the
// SFU (decoded by the browser's WebRTC, shown by the shared VideoTile from the track:
// lib/videoStreams.ts), and my camera (getUserMedia, published by ./sfu.ts as simulcast).

import type { CameraView } from "../lib/bindings";
import { commandError } from "./dispatch";

/** The stream id a tile shows for `user`'s forwarded track `name` (`screen-t<n>`: a screen
 *  share; anything else: the camera), as the desktop names them (`<user hex>/camera|screen`). */
export function remoteVideoId(user: string, name: string | null): string {
  return `${user}/${name?.startsWith("screen") ? "screen" : "camera"}`;
}

/** What the SFU's `sfu_paused` says: `user`'s video `track` (`t<n>`, `screen-t<n>`). */
export function pausedKey(user: string, track: string): string {
  return `${user}/${track.startsWith("screen") ? "screen" : "camera"}`;
}

/** An `inbound-rtp` entry of a `getStats()` report, the fields read here. */
export type InboundVideo = { type: string; kind?: string; trackIdentifier?: string; framesDecoded?: number };

/**
 * The remote videos of the SFU connection, by track id: which stream each shows and how many
 * frames the browser had decoded at the last look. `progressed` reads a stats report and names
 * the streams that decoded a frame since: those are live (`noteFrame`), as encoded frames
 * arriving on the desktop's video channel are.
 */
export class RemoteVideos {
  readonly tracks = new Map<string, { id: string; user: string; track: MediaStreamTrack; frames: number }>();

  add(user: string, name: string | null, track: MediaStreamTrack): string {
    const id = remoteVideoId(user, name);
    // A newer track of the same stream (a new connection, a renegotiation) replaces the old.
    for (const [k, v] of this.tracks) if (v.id === id) this.tracks.delete(k);
    this.tracks.set(track.id, { id, user, track, frames: 0 });
    return id;
  }

  /** Forgets `user`'s videos (they left); returns their stream ids. */
  drop(user: string): string[] {
    const gone: string[] = [];
    for (const [k, v] of this.tracks)
      if (v.user === user) {
        this.tracks.delete(k);
        gone.push(v.id);
      }
    return gone;
  }

  /** The stream ids whose track decoded a frame since the last report. */
  progressed(entries: InboundVideo[]): string[] {
    const out: string[] = [];
    for (const e of entries) {
      if (e.type !== "inbound-rtp" || e.kind !== "video" || !e.trackIdentifier) continue;
      const v = this.tracks.get(e.trackIdentifier);
      const n = e.framesDecoded ?? 0;
      if (!v || n <= v.frames) continue;
      v.frames = n;
      out.push(v.id);
    }
    return out;
  }

  ids(): string[] {
    return [...this.tracks.values()].map((v) => v.id);
  }
}

/** My self-view's stream id (the desktop's `SELF_STREAM`). */
export const SELF_STREAM = "self";

/** What the camera button shows while my camera is on. */
export function cameraView(track: MediaStreamTrack | null): CameraView {
  if (!track) return { on: false, stream_id: SELF_STREAM, source: "", width: 0, height: 0, fps: 0 };
  const s = track.getSettings?.() ?? {};
  return {
    on: true,
    stream_id: SELF_STREAM,
    source: track.label ? `camera ${track.label}` : "camera",
    width: s.width ?? 0,
    height: s.height ?? 0,
    fps: Math.round(s.frameRate ?? 0),
  };
}

/** A getUserMedia failure as a sentence the camera button's error line shows. */
export function cameraError(e: unknown) {
  const name = (e as { name?: string })?.name;
  if (name === "NotAllowedError" || name === "SecurityError")
    return commandError(
      "device",
      "Camera: the browser was not allowed to use it. Allow the camera for this site (the icon in the address bar), then try again.",
    );
  if (name === "NotFoundError" || name === "OverconstrainedError")
    return commandError("device", "Camera: the browser finds no camera on this computer.");
  if (name === "NotReadableError" || name === "AbortError")
    return commandError("device", "Camera: it could not be started (another program may be using it).");
  return commandError("device", `Camera: ${(e as Error)?.message ?? String(e)}`);
}

/** Why the camera stays off in a channel whose permissions deny `video` (as the desktop says). */
export const NO_VIDEO_HERE = "This channel's permissions do not let you send video.";
