import { cleanup, render, waitFor } from "@testing-library/preact";
import { emit } from "@tauri-apps/api/event";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { useTray, relayOn } from "./tray";
import { myVoice, resetVoiceStore, servers } from "../voice/store";
import { channelFixture, defaultBandwidth, fakeBackend, reportFor } from "../../test-support";
import type { BandwidthSettings } from "../../lib/bindings";

function Host() {
  useTray();
  return null;
}

beforeEach(() => resetVoiceStore());
afterEach(cleanup);

describe("tray", () => {
  it("shows my channel and mute state, and its clicks mute, deafen and leave like the control bar", async () => {
    servers.value = [{ id: 1, name: "Squad", role: "owner", channels: [channelFixture(7, "Lobby", 8, [])] }];
    myVoice.value = { channel: 7, muted: false, deafened: false, muted_by_channel: false, audio_notice: null };
    let voice = myVoice.value;
    const calls = fakeBackend({
      tray_sync: () => true,
      voice_state_set: (a) => (voice = { ...voice, muted: a.muted as boolean, deafened: a.deafened as boolean }),
      my_voice: () => voice,
      servers_list: () => servers.value,
      channel_leave: () => (voice = { ...voice, channel: null }),
    });
    render(<Host />);
    await waitFor(() =>
      expect(calls.filter((c) => c.cmd === "tray_sync").at(-1)?.args).toEqual({
        view: { channel: "Lobby", muted: false, deafened: false, relay_on: true },
      }),
    );
    await emit("tray-clicked", { action: "mute" });
    await waitFor(() => expect(myVoice.value.muted).toBe(true));
    expect(calls.find((c) => c.cmd === "voice_state_set")?.args).toEqual({ muted: true, deafened: false });
    await waitFor(() =>
      expect((calls.filter((c) => c.cmd === "tray_sync").at(-1)?.args.view as { muted: boolean }).muted).toBe(true),
    );
    await emit("tray-clicked", { action: "deafen" });
    await waitFor(() => expect(myVoice.value.deafened).toBe(true));
    await emit("tray-clicked", { action: "leave" });
    await waitFor(() => expect(myVoice.value.channel).toBe(null));
    await waitFor(() =>
      expect((calls.filter((c) => c.cmd === "tray_sync").at(-1)?.args.view as { channel: unknown }).channel).toBe(null),
    );
  });

  it("turns relaying off and back on at the level it had", async () => {
    let bandwidth: BandwidthSettings = { ...defaultBandwidth, relay: { level: "medium" } };
    const calls = fakeBackend({
      tray_sync: () => true,
      settings_get: () => ({
        relay_url: "ws://127.0.0.1:7700/ws",
        bandwidth,
        bandwidth_report: reportFor(bandwidth),
        bandwidth_notice: null,
      }),
      bandwidth_save: (a) => {
        bandwidth = a.settings as BandwidthSettings;
        return reportFor(bandwidth);
      },
    });
    render(<Host />);
    await waitFor(() => expect(relayOn.value).toBe(true));
    await emit("tray-clicked", { action: "relay" });
    await waitFor(() => expect(bandwidth.relay).toEqual({ level: "off" }));
    expect(relayOn.value).toBe(false);
    await emit("tray-clicked", { action: "relay" });
    await waitFor(() => expect(bandwidth.relay).toEqual({ level: "medium" }));
    expect(relayOn.value).toBe(true);
    expect(calls.filter((c) => c.cmd === "bandwidth_save").length).toBe(2);
  });
});
