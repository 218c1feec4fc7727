import { cleanup, fireEvent, render, screen, waitFor } from "@testing-library/preact";
import { emit } from "@tauri-apps/api/event";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { VoiceScreen } from "../voice/VoiceScreen";
import { resetVoiceStore } from "../voice/store";
import { channelFixture, fakeBackend } from "../../test-support";
import type { LiveStatus, LiveStreamView, ServerView, WatchingView } from "../../lib/bindings";
import { resetLiveStore } from "./store";
import { RelayGraph, formatBytes } from "./LivePanel";

beforeEach(() => {
  resetVoiceStore();
  resetLiveStore();
});
afterEach(cleanup);

const server: ServerView = { id: 1, name: "Squad", role: "owner", channels: [channelFixture(7, "Lobby", 8, [])] };

function stream(over: Partial<LiveStreamView> = {}): LiveStreamView {
  return {
    id: 3,
    server: 1,
    channel: 7,
    title: "speedrun",
    streamer_id: "cd".repeat(32),
    streamer_name: "bob",
    bitrate: 760_000,
    viewers: 2,
    recording: true,
    started_ms: 1_700_000_000_000,
    ...over,
  };
}

function watching(over: Partial<WatchingView> = {}): WatchingView {
  return {
    stream: stream(),
    video_id: "live/3",
    started: true,
    played: 40,
    skipped: 0,
    continuity_pct: 100,
    behind_live_ms: 1400,
    bytes_from_root: 250_000,
    bytes_from_peers: 750_000,
    relay_budget: 500_000,
    relayed_bytes: 1_200_000,
    chunks_relayed: 90,
    relay_now: 320_000,
    relay_history: [0, 100_000, 320_000],
    links: 3,
    qualities: [
      { layer: "high", label: "360p", width: 640, height: 360, bitrate: 740_000 },
      { layer: "low", label: "180p", width: 320, height: 180, bitrate: 240_000 },
      { layer: "audio", label: "Audio only", width: 0, height: 0, bitrate: 40_000 },
    ],
    quality: null,
    playing: "high",
    ...over,
  };
}

const idle: LiveStatus = { streaming: null, watching: null, notice: null };

describe("livestreams", () => {
  it("lists a channel's live streams with viewers and REC, and refetches on live-changed", async () => {
    let list = [stream()];
    fakeBackend({ servers_list: () => [server], live_list: () => list });
    render(<VoiceScreen />);
    const row = await screen.findByTestId("stream-speedrun");
    expect(row.dataset.viewers).toBe("2");
    expect(screen.getByTestId("stream-viewers-speedrun").textContent).toBe("2 watching");
    expect(screen.getByTestId("stream-rec-speedrun")).toBeTruthy();
    list = [];
    await emit("live-changed", { server: 1 });
    await waitFor(() => expect(screen.queryByTestId("stream-speedrun")).toBeNull());
  });

  it("goes live with the dialog's choices and shows the stream I send", async () => {
    let status = idle;
    const calls = fakeBackend({
      servers_list: () => [server],
      live_status: () => status,
      live_start: (a) => {
        const req = a.request as { title: string; record: boolean };
        status = {
          ...idle,
          streaming: {
            stream: stream({ title: req.title, recording: req.record, streamer_name: "alice", viewers: 0 }),
            source: "pattern",
            viewers: 0,
            chunks: 4,
            uploaded_bytes: 90_000,
          },
        };
        return status;
      },
    });
    render(<VoiceScreen />);
    fireEvent.click(await screen.findByTestId("go-live-Lobby"));
    await screen.findByTestId("go-live-dialog");
    fireEvent.input(screen.getByTestId("go-live-title"), { target: { value: "my run" } });
    fireEvent.click(screen.getByTestId("go-live-source-pattern"));
    fireEvent.click(screen.getByTestId("go-live-mic"));
    fireEvent.click(screen.getByTestId("go-live-record"));
    fireEvent.click(screen.getByTestId("go-live-start"));
    await waitFor(() => expect(screen.queryByTestId("go-live-dialog")).toBeNull());
    expect(calls.find((c) => c.cmd === "live_start")?.args.request).toEqual({
      channel: 7,
      title: "my run",
      source: "pattern",
      file: null,
      microphone: false,
      record: true,
    });
    expect((await screen.findByTestId("live-sending-title")).textContent).toBe("my run");
    // A viewer joins: the backend's status event updates the count.
    await emit("live-status-changed", {
      status: { ...status, streaming: { ...status.streaming!, viewers: 1 } },
    });
    await waitFor(() => expect(screen.getByTestId("live-sending-viewers").dataset.viewers).toBe("1"));
    expect(screen.queryByTestId("go-live-Lobby")).toBeNull();
  });

  it("keeps a refusal in the dialog and asks for a file for the file source", async () => {
    fakeBackend({
      servers_list: () => [server],
      live_start: () => {
        throw { code: "rejected", message: "You may not stream in this channel." };
      },
    });
    render(<VoiceScreen />);
    fireEvent.click(await screen.findByTestId("go-live-Lobby"));
    fireEvent.click(await screen.findByTestId("go-live-source-file"));
    expect(screen.getByTestId("go-live-file")).toBeTruthy();
    fireEvent.click(screen.getByTestId("go-live-start"));
    expect((await screen.findByTestId("go-live-error")).textContent).toBe("You may not stream in this channel.");
    expect(screen.getByTestId("go-live-dialog")).toBeTruthy();
  });

  it("watches: the player's tile, behind-live, and my relay contribution; the end stays as a notice", async () => {
    const calls = fakeBackend({
      servers_list: () => [server],
      live_list: () => [stream()],
      live_watch: () => ({ ...idle, watching: watching() }),
    });
    render(<VoiceScreen />);
    fireEvent.click(await screen.findByTestId("stream-watch-speedrun"));
    await screen.findByTestId("live-player");
    expect(calls.some((c) => c.cmd === "video_subscribe")).toBe(true);
    expect(calls.find((c) => c.cmd === "live_watch")?.args).toEqual({ stream: 3 });
    expect(screen.getByTestId("video-tile-live/3")).toBeTruthy();
    expect(screen.getByTestId("live-player-stats").textContent).toContain("1.4 s behind live");
    expect(screen.getByTestId("live-player-stats").textContent).toContain("75% from other viewers");
    expect(screen.getByTestId("live-player-rec")).toBeTruthy();
    expect(screen.getByTestId("relay-now").textContent).toBe("320 kbps");
    expect(screen.getByTestId("relay-total").textContent).toBe("1.2 MB");
    expect(screen.getByTestId("stream-leave-speedrun")).toBeTruthy();
    await emit("live-status-changed", { status: { ...idle, notice: "\"speedrun\" ended." } });
    expect((await screen.findByTestId("live-notice")).textContent).toContain("ended");
    expect(screen.queryByTestId("live-player")).toBeNull();
  });

  it("has a quality menu: Auto with the layer it plays, each published layer, a pick switches and Auto comes back", async () => {
    let status: LiveStatus = { ...idle, watching: watching() };
    const calls = fakeBackend({
      servers_list: () => [server],
      live_status: () => status,
      live_quality: (a) => {
        const layer = a.layer as WatchingView["quality"];
        // The engine switched: my pick is in the status at once, the player cuts over later.
        status = { ...idle, watching: watching({ quality: layer, playing: layer === null ? "low" : "high" }) };
        return status;
      },
    });
    render(<VoiceScreen />);
    const select = (await screen.findByTestId("live-quality-select")) as HTMLSelectElement;
    const options = () => [...select.options].map((o) => `${o.value}=${o.textContent}`);
    expect(select.value).toBe("auto");
    expect(options()).toEqual(["auto=Auto (360p)", "high=360p", "low=180p", "audio=Audio only"]);
    expect(screen.getByTestId("live-quality").dataset.playing).toBe("high");

    fireEvent.change(select, { target: { value: "low" } });
    await waitFor(() => expect(calls.find((c) => c.cmd === "live_quality")?.args).toEqual({ layer: "low" }));
    await waitFor(() => expect(screen.getByTestId("live-quality").dataset.quality).toBe("low"));
    expect(select.value).toBe("low");
    expect(options()[0]).toBe("auto=Auto");
    expect(screen.getByTestId("live-quality-switching").textContent).toBe("switching from 360p…");
    // The player cut over: the next status says so.
    await emit("live-status-changed", { status: { ...idle, watching: watching({ quality: "low", playing: "low" }) } });
    await waitFor(() => expect(screen.getByTestId("live-quality").dataset.playing).toBe("low"));
    expect(screen.queryByTestId("live-quality-switching")).toBeNull();

    fireEvent.change(select, { target: { value: "auto" } });
    await waitFor(() => expect(calls.filter((c) => c.cmd === "live_quality").map((c) => c.args.layer)).toEqual(["low", null]));
    await waitFor(() => expect(select.value).toBe("auto"));
    expect(options()[0]).toBe("auto=Auto (180p)");
  });

  it("shows the engine's refusal of a quality pick", async () => {
    fakeBackend({
      servers_list: () => [server],
      live_status: () => ({ ...idle, watching: watching() }),
      live_quality: () => {
        throw { code: "invalid_input", message: "You are not watching a stream: open one to pick its quality." };
      },
    });
    render(<VoiceScreen />);
    fireEvent.change(await screen.findByTestId("live-quality-select"), { target: { value: "audio" } });
    expect((await screen.findByTestId("live-error")).textContent).toContain("not watching");
  });

  it("says how to relay when the bandwidth settings give nothing", async () => {
    fakeBackend({
      servers_list: () => [server],
      live_status: () => ({ ...idle, watching: watching({ relay_budget: 0 }) }),
    });
    render(<VoiceScreen />);
    expect((await screen.findByTestId("relay-off")).textContent).toContain("Settings → Bandwidth");
  });

  it("formats bytes and draws the relay graph", () => {
    expect(formatBytes(340_000)).toBe("340 kB");
    expect(formatBytes(2_500_000)).toBe("2.5 MB");
    const { container } = render(<RelayGraph history={[0, 500, 1000]} budget={1000} />);
    expect(container.querySelector("polyline")?.getAttribute("points")?.split(" ").length).toBe(3);
  });
});
