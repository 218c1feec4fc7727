import { cleanup, fireEvent, render, screen, waitFor } from "@testing-library/preact";
import type { Channel } from "@tauri-apps/api/core";
import { emit } from "@tauri-apps/api/event";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { alice, channelFixture, defaultVoice, fakeBackend } from "../../test-support";
import {
  activeStreams,
  dispatchVideo,
  layerPlan,
  parseVideoPacket,
  pruneIdle,
  resetVideo,
  STREAM_IDLE_MS,
  subscribeVideo,
} from "../../lib/video";
import { CallPanel, currentCall } from "../calls/CallPanel";
import { resetVoiceStore } from "../voice/store";
import { VoiceScreen } from "../voice/VoiceScreen";
import { DevicesPanel } from "../settings/DevicesPanel";
import { VideoTile } from "./VideoTile";
import { endStream, noteFrame, setMediaTrack } from "../../lib/videoStreams";
import type { MyVoice, ServerView, VideoPacket } from "../../lib/bindings";

/** A packet as src-tauri/src/channels.rs `VideoPacket::encode` lays it out. */
function packet(streamId: string, keyframe: boolean, ts: number, data = [1, 2, 3], w = 1280, h = 720): ArrayBuffer {
  const id = new TextEncoder().encode(streamId);
  const buf = new ArrayBuffer(24 + id.length + data.length);
  const v = new DataView(buf);
  v.setUint8(0, 1);
  v.setUint8(1, keyframe ? 1 : 0);
  v.setUint8(2, id.length);
  v.setUint16(4, w, true);
  v.setUint16(6, h, true);
  v.setBigUint64(8, BigInt(ts), true);
  v.setBigUint64(16, 1_700_000_000_123n, true);
  new Uint8Array(buf, 24).set(id);
  new Uint8Array(buf, 24 + id.length).set(data);
  return buf;
}

/** WebCodecs is not in happy-dom: a decoder that records what it is given and outputs a frame per
 *  chunk (the real one runs in the e2e test). */
type Fake = { configs: VideoDecoderConfig[]; chunks: { type: string; timestamp: number }[]; closed: boolean };
const decoders: Fake[] = [];
class FakeDecoder {
  state = "unconfigured";
  decodeQueueSize = 0;
  rec: Fake = { configs: [], chunks: [], closed: false };
  constructor(private init: VideoDecoderInit) {
    decoders.push(this.rec);
  }
  configure(c: VideoDecoderConfig) {
    this.state = "configured";
    this.rec.configs.push(c);
  }
  decode(c: { type: string; timestamp: number }) {
    if (this.state !== "configured") throw new Error("not configured");
    this.rec.chunks.push({ type: c.type, timestamp: c.timestamp });
    this.init.output({ displayWidth: 320, displayHeight: 180, timestamp: c.timestamp, close() {} } as unknown as VideoFrame);
  }
  close() {
    this.state = "closed";
    this.rec.closed = true;
  }
}
class FakeChunk {
  type: string;
  timestamp: number;
  constructor(init: { type: string; timestamp: number }) {
    this.type = init.type;
    this.timestamp = init.timestamp;
  }
}

beforeEach(() => {
  resetVideo();
  resetVoiceStore();
  decoders.length = 0;
  Object.assign(globalThis, { VideoDecoder: FakeDecoder, EncodedVideoChunk: FakeChunk });
  HTMLCanvasElement.prototype.getContext = (() => ({ drawImage() {} })) as never;
});
afterEach(cleanup);

describe("video packets", () => {
  it("reads the header the backend writes and refuses malformed ones", () => {
    const f = parseVideoPacket(packet("self", true, 33_333, [9, 8]))!;
    expect(f).toMatchObject({ streamId: "self", keyframe: true, width: 1280, height: 720, timestampUs: 33_333, captureUnixMs: 1_700_000_000_123 });
    expect(Array.from(f.data)).toEqual([9, 8]);
    expect(parseVideoPacket(new ArrayBuffer(10))).toBeNull();
    const wrongVersion = packet("self", true, 0);
    new DataView(wrongVersion).setUint8(0, 2);
    expect(parseVideoPacket(wrongVersion)).toBeNull();
    const shortId = packet("self", true, 0, []);
    new DataView(shortId).setUint8(2, 40);
    expect(parseVideoPacket(shortId)).toBeNull();
  });

  it("routes frames by stream id", () => {
    const got: string[] = [];
    const off = subscribeVideo("a", (f) => got.push(`a:${f.timestampUs}`));
    subscribeVideo("b", (f) => got.push(`b:${f.timestampUs}`));
    dispatchVideo(packet("a", true, 1));
    dispatchVideo(Array.from(new Uint8Array(packet("b", true, 2)))); // the JSON comparison path
    off();
    dispatchVideo(packet("a", false, 3));
    expect(got).toEqual(["a:1", "b:2"]);
  });

  it("reads the after-loss flag and keeps which streams are live", () => {
    const lossy = packet("u/camera", false, 5);
    new DataView(lossy).setUint8(1, 2);
    expect(parseVideoPacket(lossy)).toMatchObject({ keyframe: false, afterLoss: true });
    expect(parseVideoPacket(packet("u/camera", true, 5))).toMatchObject({ keyframe: true, afterLoss: false });
    const t0 = Date.now();
    dispatchVideo(packet("u/camera", true, 1));
    expect(activeStreams.value.has("u/camera")).toBe(true);
    pruneIdle(t0 + STREAM_IDLE_MS / 2);
    expect(activeStreams.value.has("u/camera")).toBe(true);
    pruneIdle(t0 + STREAM_IDLE_MS + 1000);
    expect(activeStreams.value.has("u/camera")).toBe(false);
  });
});

describe("VideoTile", () => {
  it("waits for a keyframe after a loss", async () => {
    fakeBackend();
    render(<VideoTile streamId="u/camera" />);
    dispatchVideo(packet("u/camera", true, 1));
    const lossy = packet("u/camera", false, 2);
    new DataView(lossy).setUint8(1, 2);
    dispatchVideo(lossy);
    dispatchVideo(packet("u/camera", false, 3));
    dispatchVideo(packet("u/camera", true, 4));
    expect(decoders[0].chunks.map((c) => c.timestamp)).toEqual([1, 4]);
  });

  it("decodes from the first keyframe, asks for one when it starts late, and draws", async () => {
    const calls = fakeBackend();
    render(<VideoTile streamId="self" />);
    const canvas = screen.getByTestId("video-self") as HTMLCanvasElement;
    await waitFor(() => expect(calls.some((c) => c.cmd === "video_keyframe")).toBe(true));
    dispatchVideo(packet("self", false, 0)); // a delta before any keyframe: skipped
    dispatchVideo(packet("self", true, 33_333));
    dispatchVideo(packet("self", false, 66_666));
    dispatchVideo(packet("other", true, 1)); // another stream's frame: not mine
    const d = decoders[0];
    expect(d.configs).toEqual([{ codec: "vp8", codedWidth: 1280, codedHeight: 720, optimizeForLatency: true }]);
    expect(d.chunks).toEqual([
      { type: "key", timestamp: 33_333 },
      { type: "delta", timestamp: 66_666 },
    ]);
    expect(canvas.dataset.frames).toBe("2");
    expect([canvas.width, canvas.height]).toEqual([320, 180]);
    expect(calls.find((c) => c.cmd === "video_keyframe")?.args).toEqual({ streamId: "self" });
    cleanup();
    expect(d.closed).toBe(true);
  });

  it("starts a fresh decoder at a keyframe of another size (a livestream's layer switch)", async () => {
    fakeBackend();
    render(<VideoTile streamId="live/3" />);
    dispatchVideo(packet("live/3", true, 0, [1], 640, 360));
    dispatchVideo(packet("live/3", false, 50_000, [1], 640, 360));
    dispatchVideo(packet("live/3", true, 100_000, [1], 320, 180));
    dispatchVideo(packet("live/3", false, 150_000, [1], 320, 180));
    expect(decoders.length).toBe(2);
    expect(decoders[0].closed).toBe(true);
    expect(decoders[1].configs.map((c) => [c.codedWidth, c.codedHeight])).toEqual([[320, 180]]);
    expect(decoders[1].chunks.map((c) => c.timestamp)).toEqual([100_000, 150_000]);
    // The same size again keeps the decoder.
    dispatchVideo(packet("live/3", true, 200_000, [1], 320, 180));
    expect(decoders.length).toBe(2);
  });

  it("says so when the webview has no WebCodecs", () => {
    fakeBackend();
    Object.assign(globalThis, { VideoDecoder: undefined });
    render(<VideoTile streamId="self" />);
    expect(screen.getByTestId("video-error-self").textContent).toContain("WebCodecs");
  });
});

const me = { user_id: alice.public_key, display_name: "alice", muted: false, deafened: false, speaking: false };
const squad = (): ServerView => ({ id: 1, name: "Squad", role: "owner", channels: [channelFixture(7, "Lobby", 8, [me])] });

describe("camera button", () => {
  it("shows my self-view on my tile, and my avatar again when turned off", async () => {
    let video: Channel<VideoPacket> | null = null;
    const inLobby: MyVoice = { channel: 7, muted: false, deafened: false, muted_by_channel: false, audio_notice: null };
    const calls = fakeBackend({
      servers_list: () => [squad()],
      my_voice: () => inLobby,
      video_subscribe: (a) => {
        video = a.onFrame as Channel<VideoPacket>;
        return null;
      },
    });
    render(<VoiceScreen myId={alice.public_key} />);
    expect(await screen.findByTestId("avatar-alice")).toBeTruthy();
    await waitFor(() => expect((screen.getByTestId("camera") as HTMLButtonElement).disabled).toBe(false));
    fireEvent.click(screen.getByTestId("camera"));
    const canvas = await screen.findByTestId("video-self");
    expect(screen.getByTestId("tile-alice").dataset.video).toBe("true");
    expect(screen.getByTestId("camera").getAttribute("aria-pressed")).toBe("true");
    // The tile's effect has run once it asked for a keyframe (it joined a running stream).
    await waitFor(() => expect(calls.some((c) => c.cmd === "video_keyframe")).toBe(true));
    video!.onmessage(packet("self", true, 0) as unknown as VideoPacket);
    expect(canvas.dataset.frames).toBe("1");
    fireEvent.click(screen.getByTestId("camera"));
    expect(await screen.findByTestId("avatar-alice")).toBeTruthy();
    expect(screen.queryByTestId("video-self")).toBeNull();
    expect(calls.filter((c) => c.cmd === "camera_set").map((c) => c.args.on)).toEqual([true, false]);
  });

  it("shows each member's camera on their tile while it runs, and their avatar the moment they turn it off", async () => {
    let video: Channel<VideoPacket> | null = null;
    const bob = { user_id: "b0".repeat(32), display_name: "bob", muted: false, deafened: false, speaking: false };
    const carol = { user_id: "c0".repeat(32), display_name: "carol", muted: false, deafened: false, speaking: false };
    fakeBackend({
      servers_list: () => [{ ...squad(), channels: [channelFixture(7, "Lobby", 8, [me, bob, carol])] }],
      my_voice: () => ({ channel: 7, muted: false, deafened: false, muted_by_channel: false, audio_notice: null }),
      video_subscribe: (a) => {
        video = a.onFrame as Channel<VideoPacket>;
        return null;
      },
    });
    render(<VoiceScreen myId={alice.public_key} />);
    expect(await screen.findByTestId("avatar-bob")).toBeTruthy();
    // The channel's video opens with the camera button; here the test opens it.
    await waitFor(() => expect((screen.getByTestId("camera") as HTMLButtonElement).disabled).toBe(false));
    fireEvent.click(screen.getByTestId("camera"));
    await screen.findByTestId("video-self");
    const [bobs, carols] = [`${bob.user_id}/camera`, `${carol.user_id}/camera`];
    video!.onmessage(packet(bobs, true, 0) as unknown as VideoPacket);
    video!.onmessage(packet(carols, true, 0) as unknown as VideoPacket);
    await screen.findByTestId(`video-${bobs}`);
    await screen.findByTestId(`video-${carols}`);
    expect(screen.getByTestId("tile-bob").dataset.camera).toBe("on");
    expect(screen.queryByTestId("avatar-bob")).toBeNull();
    // Bob says his camera is off: his tile shows his avatar now, not a frozen picture; carol's runs on.
    const ended = packet(bobs, false, 0, []);
    new DataView(ended).setUint8(1, 4);
    expect(parseVideoPacket(ended)).toMatchObject({ ended: true });
    video!.onmessage(ended as unknown as VideoPacket);
    await screen.findByTestId("avatar-bob");
    expect(screen.getByTestId("tile-bob").dataset.camera).toBe("off");
    expect(screen.queryByTestId(`video-${bobs}`)).toBeNull();
    expect(screen.getByTestId("tile-carol").dataset.camera).toBe("on");
    // On again: his next frame brings the tile back.
    video!.onmessage(packet(bobs, true, 99) as unknown as VideoPacket);
    await screen.findByTestId(`video-${bobs}`);
    expect(screen.getByTestId("tile-bob").dataset.camera).toBe("on");
  });

  it("asks each sender for the layer its tile needs: the spotlight high, thumbnails low", async () => {
    let video: Channel<VideoPacket> | null = null;
    const member = (hex: string, name: string, speaking = false) => ({
      user_id: hex.repeat(32),
      display_name: name,
      muted: false,
      deafened: false,
      speaking,
    });
    const [bob, carol, dave] = [member("b0", "bob"), member("c0", "carol"), member("d0", "dave")];
    let roster = [me, bob, carol];
    const calls = fakeBackend({
      servers_list: () => [{ ...squad(), channels: [channelFixture(7, "Lobby", 8, roster)] }],
      my_voice: () => ({ channel: 7, muted: false, deafened: false, muted_by_channel: false, audio_notice: null }),
      video_subscribe: (a) => {
        video = a.onFrame as Channel<VideoPacket>;
        return null;
      },
      video_quality_set: () => null,
    });
    const asked = () =>
      Object.fromEntries(
        calls
          .filter((c) => c.cmd === "video_quality_set")
          .map((c) => [String(c.args.streamId).slice(0, 2), c.args.quality]),
      );
    render(<VoiceScreen myId={alice.public_key} />);
    await screen.findByTestId("avatar-bob");
    await waitFor(() => expect((screen.getByTestId("camera") as HTMLButtonElement).disabled).toBe(false));
    fireEvent.click(screen.getByTestId("camera"));
    await screen.findByTestId("video-self");
    for (const m of [bob, carol]) video!.onmessage(packet(`${m.user_id}/camera`, true, 0) as unknown as VideoPacket);
    // Two cameras in a grid: both tiles are big, both high.
    await waitFor(() => expect(asked()).toEqual({ b0: "high", c0: "high" }));
    expect(screen.getByTestId("tile-bob").dataset.quality).toBe("high");
    // Bob pinned: the spotlight, high; carol a thumbnail, low.
    fireEvent.click(screen.getByTestId("pin-bob"));
    await waitFor(() => expect(asked()).toEqual({ b0: "high", c0: "low" }));
    expect(screen.getByTestId("spotlight").querySelector("[data-testid='tile-bob']")).toBeTruthy();
    expect(screen.getByTestId("tile-carol").dataset.quality).toBe("low");
    // My own tile pinned: every remote camera is a thumbnail.
    fireEvent.click(screen.getByTestId("pin-alice"));
    await waitFor(() => expect(asked()).toEqual({ b0: "low", c0: "low" }));
    fireEvent.click(screen.getByTestId("pin-alice"));
    await waitFor(() => expect(asked()).toEqual({ b0: "high", c0: "high" }));
    // A third camera and dave speaks: dave is the spotlight (high), the others thumbnails.
    roster = [me, bob, carol, { ...dave, speaking: true }];
    video!.onmessage(packet(`${dave.user_id}/camera`, true, 0) as unknown as VideoPacket);
    await emit("servers-changed", null);
    await waitFor(() => expect(asked()).toEqual({ b0: "low", c0: "low", d0: "high" }));
    expect(screen.getByTestId("stage").dataset.spotlight).toBe("dave");
    // Each change was asked once.
    expect(calls.filter((c) => c.cmd === "video_quality_set")).toHaveLength(9);
  });

  it("on the SFU asks the relay the same way: the speaker high, the others low", async () => {
    const member = (hex: string, name: string) => ({ user_id: hex.repeat(32), display_name: name, muted: false, deafened: false, speaking: false });
    const [bob, carol] = [member("b0", "bob"), member("c0", "carol")];
    const calls = fakeBackend({
      servers_list: () => [
        { ...squad(), channels: [{ ...channelFixture(7, "Lobby", 8, [me, bob, carol]), mode: "sfu" as const, speaker: bob.user_id }] },
      ],
      my_voice: () => ({ channel: 7, muted: false, deafened: false, muted_by_channel: false, audio_notice: null }),
      video_quality_set: () => null,
    });
    const asked = () =>
      Object.fromEntries(
        calls.filter((c) => c.cmd === "video_quality_set").map((c) => [String(c.args.streamId).slice(0, 2), c.args.quality]),
      );
    render(<VoiceScreen myId={alice.public_key} />);
    await screen.findByTestId("spotlight");
    await waitFor(() => expect(asked()).toEqual({ b0: "high", c0: "low" }));
    expect(screen.getByTestId("tile-carol").dataset.quality).toBe("low");
    // Carol pinned: she is the spotlight and high, the speaker a thumbnail.
    fireEvent.click(screen.getByTestId("pin-carol"));
    await waitFor(() => expect(asked()).toEqual({ b0: "low", c0: "high" }));
  });

  it("shows a video the browser decodes itself from its track, in a <video>", async () => {
    HTMLMediaElement.prototype.play = () => Promise.resolve();
    const bob = { user_id: "b0".repeat(32), display_name: "bob", muted: false, deafened: false, speaking: false };
    fakeBackend({
      servers_list: () => [{ ...squad(), channels: [channelFixture(7, "Lobby", 8, [me, bob])] }],
      my_voice: () => ({ channel: 7, muted: false, deafened: false, muted_by_channel: false, audio_notice: null }),
      video_quality_set: () => null,
    });
    render(<VoiceScreen myId={alice.public_key} />);
    await screen.findByTestId("avatar-bob");
    const id = `${bob.user_id}/camera`;
    const track = { id: "r1", kind: "video" } as unknown as MediaStreamTrack;
    // The web back end: the track, then a decoded frame (its inbound RTP) makes the stream live.
    setMediaTrack(id, track);
    expect(screen.queryByTestId(`video-${id}`)).toBeNull();
    noteFrame(id);
    const el = await screen.findByTestId(`video-${id}`);
    expect(el.tagName).toBe("VIDEO");
    expect(el.dataset.source).toBe("track");
    await waitFor(() => expect((el as HTMLVideoElement).srcObject).toBeTruthy());
    expect(screen.getByTestId("tile-bob").dataset.camera).toBe("on");
    // The roster says his camera went off: the avatar at once.
    endStream(id);
    await screen.findByTestId("avatar-bob");
    // Without a track the same tile decodes encoded frames (the desktop's canvas).
    setMediaTrack(id, null);
    noteFrame(id);
    expect((await screen.findByTestId(`video-${id}`)).tagName).toBe("CANVAS");
  });

  it("plans layers: the spotlight high, the page low, off-page off", () => {
    const shown = new Set(["a", "b"]);
    expect(Object.fromEntries(layerPlan(["a", "b", "c"], shown, null, 2))).toEqual({ a: "high", b: "high", c: "off" });
    expect(Object.fromEntries(layerPlan(["a", "b", "c"], shown, null, 3))).toEqual({ a: "low", b: "low", c: "off" });
    expect(Object.fromEntries(layerPlan(["a", "b", "c"], shown, "c", 3))).toEqual({ a: "low", b: "low", c: "high" });
  });

  it("says what to do when there is no camera", async () => {
    fakeBackend({
      servers_list: () => [squad()],
      my_voice: () => ({ channel: 7, muted: false, deafened: false, muted_by_channel: false, audio_notice: null }),
      camera_set: () => {
        throw { code: "device", message: "No camera found: this machine has no video capture device. Plug in a camera, or pick the test pattern under Settings → Devices → Camera." };
      },
    });
    render(<VoiceScreen myId={alice.public_key} />);
    await waitFor(() => expect((screen.getByTestId("camera") as HTMLButtonElement).disabled).toBe(false));
    fireEvent.click(screen.getByTestId("camera"));
    expect((await screen.findByTestId("camera-error")).textContent).toContain("test pattern");
    expect(screen.getByTestId("avatar-alice")).toBeTruthy();
  });

  it("is off outside a channel", async () => {
    fakeBackend({ servers_list: () => [squad()] });
    render(<VoiceScreen myId={alice.public_key} />);
    expect(((await screen.findByTestId("camera")) as HTMLButtonElement).disabled).toBe(true);
  });
});

describe("camera source setting", () => {
  it("lists the test pattern, says when no camera exists, and saves the choice", async () => {
    const calls = fakeBackend();
    render(<DevicesPanel voice={defaultVoice} onChange={() => {}} />);
    const select = (await screen.findByTestId("video-source")) as HTMLSelectElement;
    await screen.findByTestId("no-camera");
    fireEvent.change(select, { target: { value: "pattern" } });
    await waitFor(() => expect(screen.getByTestId("video-status").textContent).toBe("Saved."));
    expect(calls.find((c) => c.cmd === "video_settings_set")?.args).toEqual({ settings: { source: "pattern", quality: "720p30" } });
  });
});

describe("video in a call", () => {
  const bob = { user_id: "b0".repeat(32), display_name: "bob" };
  const active = { phase: "active" as const, call: 3, peer: bob, peer_speaking: false, ended: null };

  it("shows the friend's camera while its frames arrive, and sends mine with the call's camera button", async () => {
    let video: Channel<VideoPacket> | null = null;
    currentCall.value = active;
    const calls = fakeBackend({
      call_get: () => active,
      call_hangup: () => ({ phase: "idle", call: null, peer: null, peer_speaking: false, ended: "You hung up." }),
      video_subscribe: (a) => {
        video = a.onFrame as Channel<VideoPacket>;
        return null;
      },
    });
    render(<CallPanel />);
    await screen.findByTestId("call-camera");
    expect(screen.queryByTestId("call-video")).toBeNull();
    // My camera: on in the call, shown beside theirs; the video channel opens with it.
    fireEvent.click(screen.getByTestId("call-camera"));
    await screen.findByTestId("call-video-self");
    expect(calls.filter((c) => c.cmd === "camera_set").map((c) => c.args.on)).toEqual([true]);
    // Their camera shows once its frames arrive, under their stream id.
    const theirs = `${bob.user_id}/camera`;
    video!.onmessage(packet(theirs, true, 0) as unknown as VideoPacket);
    const canvas = await screen.findByTestId(`video-${theirs}`);
    await waitFor(() => expect(calls.some((c) => c.cmd === "video_keyframe" && c.args.streamId === theirs)).toBe(true));
    video!.onmessage(packet(theirs, true, 33_333) as unknown as VideoPacket);
    expect(Number(canvas.dataset.frames)).toBeGreaterThanOrEqual(1);
    // Their camera went off (no frames): the tile goes.
    pruneIdle(Date.now() + STREAM_IDLE_MS + 1000);
    await waitFor(() => expect(screen.queryByTestId("call-video-peer")).toBeNull());
    // Hanging up turns my camera off (I am in no channel).
    fireEvent.click(screen.getByTestId("call-hangup"));
    await waitFor(() => expect(calls.filter((c) => c.cmd === "camera_set").map((c) => c.args.on)).toEqual([true, false]));
    expect(screen.queryByTestId("call-video")).toBeNull();
  });
});
