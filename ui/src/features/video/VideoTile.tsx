import { useEffect, useRef } from "preact/hooks";
import { useSignal } from "@preact/signals";
import { commands } from "../../lib/bindings";
import { subscribeVideo, type VideoFrameMsg } from "../../lib/video";
import { mediaTracks } from "../../lib/videoStreams";

/** More undecoded frames than this and the tile skips to the next keyframe (the webview is too
 *  slow; showing late pictures would only add latency). */
const MAX_QUEUE = 4;

/**
 * One video stream, from whichever source the back end gives it: a `MediaStreamTrack` the
 * browser decodes itself (the web back end, `mediaTracks`) plays in a `<video>` element
 * (`TrackVideo`); otherwise encoded frames from the video channel are decoded with WebCodecs
 * onto a canvas (`EncodedVideo`, the desktop). Both carry the same test ids and `data-frames`,
 * `data-width`, `data-height`.
 */
export function VideoTile(props: { streamId: string; label?: string }) {
  const track = mediaTracks.value.get(props.streamId);
  return track ? <TrackVideo streamId={props.streamId} track={track} label={props.label} /> : <EncodedVideo {...props} />;
}

/** Frames a `<video>` has shown: the larger of `requestVideoFrameCallback`'s count (where
 *  there is one) and the playback quality's total, read every 250 ms. */
function countFrames(el: HTMLVideoElement, onFrames: (n: number) => void): () => void {
  let stop = false;
  let presented = 0;
  const report = () => onFrames(Math.max(presented, el.getVideoPlaybackQuality?.().totalVideoFrames ?? 0));
  if (typeof el.requestVideoFrameCallback === "function") {
    const tick = () => {
      if (stop) return;
      presented += 1;
      el.requestVideoFrameCallback(tick);
    };
    el.requestVideoFrameCallback(tick);
  }
  const t = setInterval(report, 250);
  return () => {
    stop = true;
    clearInterval(t);
  };
}

/** A track the browser decodes (its WebRTC), played muted in a `<video>` (the audio plays
 *  apart, with the member's volume). */
function TrackVideo(props: { streamId: string; track: MediaStreamTrack; label?: string }) {
  const video = useRef<HTMLVideoElement>(null);
  useEffect(() => {
    const el = video.current;
    if (!el) return;
    el.srcObject = new MediaStream([props.track]);
    el.play?.()?.catch(() => {});
    const stop = countFrames(el, (n) => {
      el.dataset.frames = String(n);
      el.dataset.width = String(el.videoWidth);
      el.dataset.height = String(el.videoHeight);
    });
    return () => {
      stop();
      el.srcObject = null;
    };
  }, [props.track]);
  return (
    <div class="video-tile" data-testid={`video-tile-${props.streamId}`}>
      <video
        ref={video}
        autoplay
        muted
        playsInline
        data-testid={`video-${props.streamId}`}
        data-source="track"
        data-frames="0"
        aria-label={props.label}
      />
    </div>
  );
}

/**
 * One video stream drawn on a canvas: encoded VP8 frames of `streamId` from the video channel,
 * decoded by WebCodecs' `VideoDecoder`. The same component shows my self-view (`self`) and, with
 * their stream ids, remote tracks. The canvas carries what a test needs: `data-frames` (decoded
 * so far), `data-width`/`data-height`, `data-latency-ms` (capture to draw of the last frame) and
 * `data-draw-ms` (time spent in drawImage so far: the benchmark's split of the web process).
 */
function EncodedVideo(props: { streamId: string; label?: string }) {
  const canvas = useRef<HTMLCanvasElement>(null);
  const unsupported = useSignal<string | null>(null);
  useEffect(() => {
    const el = canvas.current;
    if (!el) return;
    if (typeof VideoDecoder === "undefined") {
      unsupported.value = "This window cannot decode video (no WebCodecs VideoDecoder).";
      return;
    }
    const ctx = el.getContext("2d");
    let decoder: VideoDecoder | null = null;
    let waitingForKey = true;
    let asked = false;
    let frames = 0;
    let drawMs = 0;
    const captured = new Map<number, number>();
    const requestKeyframe = () => {
      if (asked) return;
      asked = true;
      commands.videoKeyframe(props.streamId).catch(() => {});
    };
    const fresh = () => {
      if (decoder && decoder.state !== "closed") decoder.close();
      decoder = new VideoDecoder({
        output: (f) => {
          if (el.width !== f.displayWidth || el.height !== f.displayHeight) {
            el.width = f.displayWidth;
            el.height = f.displayHeight;
          }
          const t0 = performance.now();
          ctx?.drawImage(f, 0, 0);
          drawMs += performance.now() - t0;
          frames += 1;
          const at = captured.get(f.timestamp);
          captured.delete(f.timestamp);
          el.dataset.frames = String(frames);
          el.dataset.drawMs = drawMs.toFixed(1);
          el.dataset.width = String(f.displayWidth);
          el.dataset.height = String(f.displayHeight);
          if (at) el.dataset.latencyMs = String(Date.now() - at);
          f.close();
        },
        error: () => {
          // A corrupt frame or a decoder failure: start over at the next keyframe.
          waitingForKey = true;
          asked = false;
          decoder = null;
          requestKeyframe();
        },
      });
    };
    // The size the decoder was configured for. A keyframe of another size (a livestream's layer
    // switch) starts a fresh decoder: in the app e2e, WebKit's decoder configured for 640x360 drew
    // nothing more once 320x180 keyframes came.
    let size = "";
    const onFrame = (m: VideoFrameMsg) => {
      if (m.keyframe && size !== "" && size !== `${m.width}x${m.height}`) {
        fresh();
        waitingForKey = true;
      }
      if (!decoder || decoder.state === "closed") fresh();
      const d = decoder!;
      if (!m.keyframe && (waitingForKey || m.afterLoss || d.decodeQueueSize > MAX_QUEUE)) {
        waitingForKey = true;
        requestKeyframe();
        return;
      }
      if (m.keyframe) {
        if (d.state !== "configured" || waitingForKey) {
          d.configure({ codec: "vp8", codedWidth: m.width, codedHeight: m.height, optimizeForLatency: true });
          size = `${m.width}x${m.height}`;
        }
        waitingForKey = false;
        asked = false;
      }
      if (captured.size > 64) captured.clear();
      if (m.captureUnixMs) captured.set(m.timestampUs, m.captureUnixMs);
      try {
        d.decode(new EncodedVideoChunk({ type: m.keyframe ? "key" : "delta", timestamp: m.timestampUs, data: m.data }));
      } catch {
        waitingForKey = true;
        requestKeyframe();
      }
    };
    const off = subscribeVideo(props.streamId, onFrame);
    // A tile that opens on a running stream needs a keyframe to start from.
    requestKeyframe();
    return () => {
      off();
      if (decoder && decoder.state !== "closed") decoder.close();
    };
  }, [props.streamId]);
  return (
    <div class="video-tile" data-testid={`video-tile-${props.streamId}`}>
      {unsupported.value ? (
        <p class="error" data-testid={`video-error-${props.streamId}`}>
          {unsupported.value}
        </p>
      ) : (
        <canvas ref={canvas} data-testid={`video-${props.streamId}`} data-frames="0" aria-label={props.label} />
      )}
    </div>
  );
}
