import { cleanup, fireEvent, render, screen, waitFor } from "@testing-library/preact";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { Channel } from "@tauri-apps/api/core";
import { DevicesPanel } from "./DevicesPanel";
import { VoicePanel } from "./VoicePanel";
import { defaultVoice, fakeBackend } from "../../test-support";
import { openStreams, resetStreams } from "../../lib/streams";
import type { LevelSample } from "../../lib/bindings";

beforeEach(resetStreams);
afterEach(cleanup);

const speaker = { id: "hw:1", name: "USB Headset", input: false, output: true, default_input: false, default_output: true };

describe("DevicesPanel", () => {
  it("plays a test sound per speaker and says plainly when one is missing", async () => {
    const calls = fakeBackend({
      devices_list: () => [speaker],
      device_test_sound: (a) => {
        if (a.device === null)
          throw { code: "device", message: "No speaker found. Plug one in (or check that the sound system runs), then try again." };
        return null;
      },
    });
    render(<DevicesPanel voice={{ ...defaultVoice, input_device: "gone-mic" }} onChange={() => {}} />);
    fireEvent.click(await screen.findByTestId("test-sound-hw:1"));
    await waitFor(() =>
      expect(screen.getByTestId("test-result-hw:1").textContent).toBe("Played. Did you hear a chime?"),
    );
    expect(calls.find((c) => c.cmd === "device_test_sound")?.args).toEqual({ device: "hw:1" });
    fireEvent.click(screen.getByTestId("test-sound-default"));
    await waitFor(() => expect(screen.getByTestId("test-result-default").textContent).toContain("No speaker found."));
    expect(screen.getByTestId("no-microphone")).toBeTruthy();
    expect(screen.getByTestId("missing-microphone").textContent).toContain("gone-mic");
  });
});

describe("DevicesPanel camera quality", () => {
  it("shows the saved quality and saves a new one with the source kept", async () => {
    const calls = fakeBackend({ video_settings_get: () => ({ source: "pattern", quality: "720p30" }) });
    render(<DevicesPanel voice={defaultVoice} onChange={() => {}} />);
    const quality = (await screen.findByTestId("video-quality")) as HTMLSelectElement;
    expect(quality.value).toBe("720p30");
    fireEvent.change(quality, { target: { value: "360p30" } });
    await waitFor(() => expect(screen.getByTestId("video-status").textContent).toBe("Saved."));
    expect(calls.find((c) => c.cmd === "video_settings_set")?.args).toEqual({
      settings: { source: "pattern", quality: "360p30" },
    });
    expect((screen.getByTestId("video-quality") as HTMLSelectElement).value).toBe("360p30");
  });
});

describe("VoicePanel meter", () => {
  it("monitors the microphone while open, moves with the level stream, and explains a missing one", async () => {
    let levels: Channel<LevelSample> | null = null;
    let monitor = 0;
    const calls = fakeBackend({
      levels_subscribe: (a) => {
        levels = a.onLevel as Channel<LevelSample>;
        return null;
      },
      input_monitor_start: () => {
        monitor += 1;
        if (monitor === 1) throw { code: "device", message: "No microphone found. Plug one in." };
        return null;
      },
    });
    await openStreams();
    const view = render(<VoicePanel initial={defaultVoice} />);
    expect((await screen.findByTestId("meter-error")).textContent).toBe("No microphone found. Plug one in.");
    const meter = screen.getByTestId("level-meter");
    expect(meter.dataset.live).toBe("false");
    levels!.onmessage({ rms_dbfs: -20, peak_dbfs: -12, speaking: true, threshold_dbfs: -45, live: true });
    await waitFor(() => expect(screen.getByTestId("level-meter").dataset.level).toBe("-20"));
    const fill = screen.getByTestId("level-meter").querySelector(".meter-fill") as HTMLElement;
    expect(fill.className).toContain("speaking");
    expect(fill.style.width).toBe(`${(50 / 70) * 100}%`);
    levels!.onmessage({ rms_dbfs: -100, peak_dbfs: -100, speaking: false, threshold_dbfs: -45, live: false });
    await waitFor(() => expect(screen.getByTestId("level-meter").dataset.live).toBe("false"));
    view.unmount();
    expect(calls.some((c) => c.cmd === "input_monitor_stop")).toBe(true);
  });
});
