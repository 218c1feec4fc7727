import { cleanup, fireEvent, render, screen, waitFor, within } from "@testing-library/preact";
import type { Channel } from "@tauri-apps/api/core";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { alice, channelFixture, fakeBackend } from "../../test-support";
import { openVideo, resetVideo } from "../../lib/video";
import { resetScreen } from "../../lib/screen";
import { resetVoiceStore } from "./store";
import { VoiceScreen } from "./VoiceScreen";
import type { ServerView, ShareTargetsView, VideoPacket } from "../../lib/bindings";

const me = { user_id: alice.public_key, display_name: "alice", muted: false, deafened: false, speaking: false };
const bob = { user_id: "b0".repeat(32), display_name: "bob", muted: false, deafened: false, speaking: false };
const squad = (): ServerView => ({ id: 1, name: "Squad", role: "owner", channels: [channelFixture(7, "Lobby", 8, [me, bob])] });
const inLobby = () => ({ channel: 7, muted: false, deafened: false, muted_by_channel: false, audio_notice: null });

const targets: ShareTargetsView = {
  targets: [
    { id: "screen:0", kind: "screen", name: "HDMI-1 (primary)", width: 1920, height: 1080 },
    { id: "window:42", kind: "window", name: "notes.txt — Editor", width: 1280, height: 800 },
    { id: "pattern", kind: "test", name: "Test pattern (moving, with a frame code)", width: 1280, height: 720 },
  ],
  unavailable: null,
};

/** A packet as src-tauri/src/channels.rs lays it out (see Video.test.tsx). */
function packet(streamId: string, keyframe: boolean, w = 1280, h = 720): ArrayBuffer {
  const id = new TextEncoder().encode(streamId);
  const data = [1, 2, 3];
  const buf = new ArrayBuffer(24 + id.length + data.length);
  const v = new DataView(buf);
  v.setUint8(0, 1);
  v.setUint8(1, keyframe ? 1 : 0);
  v.setUint8(2, id.length);
  v.setUint16(4, w, true);
  v.setUint16(6, h, true);
  new Uint8Array(buf, 24).set(id);
  new Uint8Array(buf, 24 + id.length).set(data);
  return buf;
}

class FakeDecoder {
  state = "unconfigured";
  decodeQueueSize = 0;
  constructor(private init: VideoDecoderInit) {}
  configure() {
    this.state = "configured";
  }
  decode(c: { timestamp: number }) {
    this.init.output({ displayWidth: 1280, displayHeight: 720, timestamp: c.timestamp, close() {} } as unknown as VideoFrame);
  }
  close() {
    this.state = "closed";
  }
}
class FakeChunk {
  constructor(init: object) {
    Object.assign(this, init);
  }
}

beforeEach(() => {
  resetVideo();
  resetScreen();
  resetVoiceStore();
  Object.assign(globalThis, { VideoDecoder: FakeDecoder, EncodedVideoChunk: FakeChunk });
  HTMLCanvasElement.prototype.getContext = (() => ({ drawImage() {} })) as never;
});
afterEach(cleanup);

describe("screen share picker", () => {
  it("lists screens and windows by name and size; a pick shares at the chosen quality; stop sharing", async () => {
    const calls = fakeBackend({
      servers_list: () => [squad()],
      my_voice: inLobby,
      screen_targets_list: () => targets,
      screen_share_start: () => ({ sharing: true, width: 1280, height: 800, fps: 60 }),
      screen_share_stop: () => ({ sharing: false, width: 0, height: 0, fps: 0 }),
    });
    render(<VoiceScreen myId={alice.public_key} />);
    const share = (await screen.findByTestId("share")) as HTMLButtonElement;
    await waitFor(() => expect(share.disabled).toBe(false));
    fireEvent.click(share);
    const picker = await screen.findByTestId("share-picker");
    const screens = await within(picker).findByTestId("share-group-screen");
    expect(screens.textContent).toContain("HDMI-1 (primary)");
    expect(screens.textContent).toContain("1920×1080");
    expect(within(picker).getByTestId("share-group-window").textContent).toContain("notes.txt — Editor1280×800");
    expect(within(picker).getByTestId("share-group-test").textContent).toContain("Test pattern");
    expect(screen.queryByTestId("share-unavailable")).toBeNull();
    fireEvent.change(screen.getByTestId("share-quality"), { target: { value: "1080p60" } });
    fireEvent.click(screen.getByTestId("share-target-window:42"));
    await waitFor(() => expect(screen.queryByTestId("share-picker")).toBeNull());
    expect(calls.find((c) => c.cmd === "screen_share_start")?.args).toEqual({ target: "window:42", quality: "1080p60" });
    expect(screen.getByTestId("sharing-state").textContent).toBe("Sharing notes.txt — Editor · 1280×800 at 60 fps");
    expect(share.getAttribute("aria-pressed")).toBe("true");
    expect(share.textContent).toBe("Stop sharing");
    fireEvent.click(share);
    await waitFor(() => expect(share.textContent).toBe("Share"));
    expect(calls.filter((c) => c.cmd === "screen_share_stop")).toHaveLength(1);
    expect(screen.queryByTestId("sharing-state")).toBeNull();
  });

  it("says why screens cannot be captured, still offers the test pattern, and keeps a refusal in the picker", async () => {
    const why = "Screen sharing needs X11 for now: this Wayland session gives Hum no X11 display.";
    fakeBackend({
      servers_list: () => [squad()],
      my_voice: inLobby,
      screen_targets_list: () => ({ targets: [targets.targets[2]], unavailable: why }),
      screen_share_start: () => {
        throw { code: "device", message: "Cannot share this screen: the encoder refused 1x1" };
      },
    });
    render(<VoiceScreen myId={alice.public_key} />);
    const share = (await screen.findByTestId("share")) as HTMLButtonElement;
    await waitFor(() => expect(share.disabled).toBe(false));
    fireEvent.click(share);
    expect((await screen.findByTestId("share-unavailable")).textContent).toBe(why);
    expect(screen.queryByTestId("share-group-screen")).toBeNull();
    fireEvent.click(await screen.findByTestId("share-target-pattern"));
    expect((await screen.findByTestId("share-error")).textContent).toContain("Cannot share this screen");
    expect(screen.getByTestId("share-picker")).toBeTruthy();
    expect(share.textContent).toBe("Share");
    fireEvent.click(screen.getByTestId("share-picker-close"));
    await waitFor(() => expect(screen.queryByTestId("share-picker")).toBeNull());
  });

  it("is disabled outside a channel or a call", async () => {
    fakeBackend({ servers_list: () => [squad()], my_voice: () => ({ ...inLobby(), channel: null }) });
    render(<VoiceScreen myId={alice.public_key} />);
    const share = (await screen.findByTestId("share")) as HTMLButtonElement;
    expect(share.disabled).toBe(true);
    expect(share.title).toContain("to share your screen");
  });
});

describe("a remote screen share", () => {
  it("takes the spotlight as its own tile beside the sharer's tile, and goes when it stops", async () => {
    let video: Channel<VideoPacket> | null = null;
    fakeBackend({
      servers_list: () => [squad()],
      my_voice: inLobby,
      video_subscribe: (a) => {
        video = a.onFrame as Channel<VideoPacket>;
        return null;
      },
    });
    render(<VoiceScreen myId={alice.public_key} />);
    expect(await screen.findByTestId("avatar-bob")).toBeTruthy();
    await openVideo();
    const bobsScreen = `${bob.user_id}/screen`;
    video!.onmessage(packet(bobsScreen, true) as unknown as VideoPacket);
    const spot = await screen.findByTestId("screen-spotlight");
    expect(within(spot).getByTestId("screen-bob").textContent).toContain("bob's screen");
    expect(within(spot).getByTestId(`video-${bobsScreen}`)).toBeTruthy();
    expect(screen.getByTestId("stage").dataset.screenSpotlight).toBe("bob");
    // Bob's own tile stays (his avatar: his camera is off).
    expect(screen.getByTestId("avatar-bob")).toBeTruthy();
    // The sender stops: an ended packet (flag bit 2) takes the tile away.
    const ended = packet(bobsScreen, false, 0, 0);
    new DataView(ended).setUint8(1, 4);
    video!.onmessage(ended as unknown as VideoPacket);
    await waitFor(() => expect(screen.queryByTestId("screen-spotlight")).toBeNull());
  });
});
