import { cleanup, fireEvent, render, screen, waitFor } from "@testing-library/preact";
import { emit } from "@tauri-apps/api/event";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { VoiceScreen } from "./VoiceScreen";
import { describe as describeStatus } from "./RelayBanner";
import { channelFixture, fakeBackend } from "../../test-support";
import type { ServerView } from "../../lib/bindings";
import { resetVoiceStore, selectedServer } from "./store";
import { MUTED_BY_CHANNEL } from "./ControlBar";

beforeEach(resetVoiceStore);
afterEach(cleanup);

function server(speaking: boolean): ServerView {
  return {
    id: 1,
    name: "Squad",
    role: "owner",
    channels: [
      channelFixture(7, "Lobby", 8, [
        { user_id: "cd".repeat(32), display_name: "bot", muted: false, deafened: false, speaking },
      ]),
    ],
  };
}

describe("VoiceScreen", () => {
  it("shows rosters with speaking indicators and refetches when the backend nudges", async () => {
    let speaking = false;
    fakeBackend({ servers_list: () => [server(speaking)] });
    render(<VoiceScreen />);
    const bot = await screen.findByTestId("member-bot");
    expect(bot.dataset.speaking).toBe("false");
    speaking = true;
    await emit("servers-changed", null);
    await waitFor(() => expect(screen.getByTestId("member-bot").dataset.speaking).toBe("true"));
  });

  it("joins a channel and creates channels", async () => {
    let me = { channel: null as unknown, muted: false, deafened: false, muted_by_channel: false, audio_notice: null as string | null };
    const calls = fakeBackend({
      servers_list: () => [server(false)],
      my_voice: () => me,
      channel_join: (a) => (me = { channel: a.channel, muted: false, deafened: false, muted_by_channel: false, audio_notice: "No microphone found." }),
      channel_create: () => server(false).channels[0],
    });
    render(<VoiceScreen />);
    fireEvent.click(await screen.findByTestId("join-Lobby"));
    await waitFor(() => expect(calls.some((c) => c.cmd === "channel_join" && c.args.channel === 7)).toBe(true));
    expect((await screen.findByTestId("audio-notice")).textContent).toBe("No microphone found.");
    fireEvent.input(screen.getByTestId("new-channel-name-Squad"), { target: { value: "Raid" } });
    fireEvent.input(screen.getByTestId("new-channel-max-Squad"), { target: { value: "5" } });
    fireEvent.click(screen.getByTestId("create-channel-Squad"));
    await waitFor(() => {
      const c = calls.find((x) => x.cmd === "channel_create");
      expect(c?.args).toEqual({ server: 1, nameText: "Raid", maxParticipants: 5 });
    });
  });

  it("when the relay takes me out of my channel, the channel's old notice goes and the reason shows", async () => {
    let me = { channel: 7 as number | null, muted: false, deafened: false, muted_by_channel: false, audio_notice: null as string | null };
    let list = [server(false)];
    fakeBackend({ servers_list: () => list, my_voice: () => me });
    render(<VoiceScreen />);
    await screen.findByTestId("control-leave");
    await emit("audio-notice", { message: "The microphone was unplugged." });
    expect((await screen.findByTestId("audio-notice")).textContent).toBe("The microphone was unplugged.");
    // What the backend does on roster_leave "deleted": no channel, the reason as its notice.
    list = [];
    me = { ...me, channel: null, audio_notice: "The voice channel you were in was deleted (or its whole server)." };
    await emit("audio-notice", { message: "The voice channel you were in was deleted (or its whole server)." });
    await emit("servers-changed", null);
    await waitFor(() => expect(screen.queryByTestId("control-leave")).toBeNull());
    expect(screen.getByTestId("audio-notice").textContent).toBe("The voice channel you were in was deleted (or its whole server).");
    expect(screen.getByTestId("no-servers")).toBeTruthy();
    // Joining elsewhere starts without it.
    list = [server(false)];
    me = { ...me, channel: 7, audio_notice: null };
    await emit("servers-changed", null);
    await screen.findByTestId("control-leave");
    await waitFor(() => expect(screen.queryByTestId("audio-notice")).toBeNull());
  });

  it("while the channel's permissions mute me, unmute is disabled and says why; given back, I stay muted", async () => {
    let me = { channel: 7 as number | null, muted: false, deafened: false, muted_by_channel: false, audio_notice: null as string | null };
    const calls = fakeBackend({ servers_list: () => [server(false)], my_voice: () => me });
    render(<VoiceScreen />);
    const mute = (await screen.findByTestId("mute")) as HTMLButtonElement;
    expect(mute.disabled).toBe(false);
    expect(mute.title).toBe("Mute");
    // What the backend does when the engine reports the channel took `speak` away.
    me = { ...me, muted: true, muted_by_channel: true };
    await emit("servers-changed", null);
    await waitFor(() => expect(mute.disabled).toBe(true));
    expect(mute.title).toBe(MUTED_BY_CHANNEL);
    expect(mute.textContent).toBe("Muted by channel");
    expect(mute.getAttribute("aria-pressed")).toBe("true");
    expect(screen.getByTestId("self-speaking").textContent).toBe("Muted by the channel's permissions");
    fireEvent.click(mute);
    expect(calls.some((c) => c.cmd === "voice_state_set")).toBe(false);
    // Given back: still muted, but I may unmute now.
    me = { ...me, muted_by_channel: false };
    await emit("servers-changed", null);
    await waitFor(() => expect(mute.disabled).toBe(false));
    expect(mute.title).toBe("Unmute");
    expect(mute.textContent).toBe("Unmute");
    expect(screen.getByTestId("self-speaking").textContent).toBe("You are muted");
  });

  it("says why a server left my list: kicked, or deleted by its owner (not my own delete)", async () => {
    const mine = (role: string): ServerView => ({ ...server(false), role });
    let list = [mine("member")];
    fakeBackend({ servers_list: () => list });
    render(<VoiceScreen />);
    await screen.findByTestId("channels-Squad");
    list = [];
    await emit("server-gone", { server: 1, reason: "kicked" });
    expect((await screen.findByTestId("server-notice")).textContent).toContain("You were removed from Squad (kicked or banned by an admin).");
    await waitFor(() => expect(screen.queryByTestId("channels-Squad")).toBeNull());
    fireEvent.click(screen.getByTestId("server-notice-dismiss"));
    expect(screen.queryByTestId("server-notice")).toBeNull();

    list = [mine("member")];
    await emit("servers-changed", null);
    await screen.findByTestId("channels-Squad");
    list = [];
    await emit("server-gone", { server: 1, reason: "deleted" });
    expect((await screen.findByTestId("server-notice")).textContent).toContain("Squad was deleted by its owner.");
    await waitFor(() => expect(screen.queryByTestId("channels-Squad")).toBeNull());
    fireEvent.click(screen.getByTestId("server-notice-dismiss"));

    list = [mine("owner")];
    await emit("servers-changed", null);
    await screen.findByTestId("new-channel-name-Squad"); // the owner's view
    list = [];
    await emit("server-gone", { server: 1, reason: "deleted" });
    await waitFor(() => expect(screen.queryByTestId("channels-Squad")).toBeNull());
    expect(screen.queryByTestId("server-notice")).toBeNull();
  });

  it("shows the relay's refusal", async () => {
    fakeBackend({
      servers_list: () => {
        throw { code: "relay_unavailable", message: "Not connected to a relay yet." };
      },
    });
    render(<VoiceScreen />);
    expect((await screen.findByTestId("voice-error")).textContent).toBe("Not connected to a relay yet.");
  });
});

describe("channel settings", () => {
  it("lets an admin edit limits and per-role permissions, with the backend's refusals shown", async () => {
    let refuse = true;
    const calls = fakeBackend({
      servers_list: () => [server(false)],
      channel_configure: () => {
        if (refuse) {
          refuse = false;
          throw {
            code: "invalid_input",
            message: "Members who may not join cannot speak, share video or stream in it: allow Join, or clear the other boxes.",
          };
        }
        return null;
      },
    });
    render(<VoiceScreen />);
    fireEvent.click(await screen.findByTestId("channel-edit-Lobby"));
    const join = (await screen.findByTestId("perm-member-join")) as HTMLInputElement;
    expect(join.checked).toBe(true);
    fireEvent.click(join);
    fireEvent.click(screen.getByTestId("perm-save"));
    expect((await screen.findByTestId("perm-error")).textContent).toContain("Members who may not join");
    fireEvent.click(screen.getByTestId("perm-member-speak"));
    fireEvent.click(screen.getByTestId("perm-member-video"));
    fireEvent.click(screen.getByTestId("perm-member-stream"));
    fireEvent.input(screen.getByTestId("perm-max"), { target: { value: "4" } });
    const limit = screen.getByTestId("perm-mesh-limit") as HTMLSelectElement;
    expect(limit.value).toBe("");
    fireEvent.change(limit, { target: { value: "0" } });
    fireEvent.click(screen.getByTestId("perm-save"));
    await waitFor(() => expect(screen.queryByTestId("channel-settings-Lobby")).toBeNull());
    const sent = calls.filter((c) => c.cmd === "channel_configure").at(-1)?.args;
    expect(sent).toEqual({
      channel: 7,
      maxParticipants: 4,
      permissions: {
        member: { join: false, speak: false, video: false, stream: false },
        admin: { join: true, speak: true, video: true, stream: true },
      },
      meshLimit: 0,
    });
  });

  it("members see no settings button", async () => {
    fakeBackend({ servers_list: () => [{ ...server(false), role: "member" }] });
    render(<VoiceScreen />);
    await screen.findByTestId("channel-Lobby");
    expect(screen.queryByTestId("channel-edit-Lobby")).toBeNull();
  });

  it("draws the channel icon as SVG, not a font glyph", async () => {
    fakeBackend({ servers_list: () => [server(false)] });
    render(<VoiceScreen />);
    const ch = await screen.findByTestId("channel-Lobby");
    expect(ch.querySelector(".channel-name svg")).toBeTruthy();
    expect(ch.querySelector(".channel-name")?.textContent?.trim()).toBe("Lobby");
  });
});

describe("relay status text", () => {
  it("says when it retries", () => {
    expect(describeStatus({ state: "disconnected", reason: "connection refused", retry_in_ms: 2000 })).toEqual({
      kind: "down",
      text: "Relay unavailable: connection refused. Retrying in 2 s…",
    });
    expect(describeStatus({ state: "connecting", attempt: 3 }).text).toBe("Reconnecting (attempt 3)…");
  });

  it("says which relay (or cluster node) it is connected to", () => {
    const on = (node: string) => describeStatus({ state: "connected", user_id: "ab".repeat(32), display_name: "me", node });
    expect(on("ws://node-2.example:7700/ws")).toEqual({ kind: "ok", text: "Connected to node-2.example:7700" });
    expect(on("wss://hum.example.org/ws").text).toBe("Connected to hum.example.org");
    expect(on("not a url").text).toBe("Connected to not a url");
  });
});

describe("big rooms", () => {
  const member = (i: number) => ({
    user_id: i.toString(16).padStart(2, "0").repeat(32),
    display_name: `m${i}`,
    muted: false,
    deafened: false,
    speaking: false,
  });

  it("badges SFU channels, spotlights the dominant speaker and pages the rest", async () => {
    const roster = Array.from({ length: 30 }, (_, i) => member(i + 1));
    let mode: "mesh" | "sfu" = "mesh";
    let speaker: string | null = null;
    fakeBackend({
      servers_list: () => [
        { id: 1, name: "Squad", role: "owner", channels: [{ ...channelFixture(7, "Big", 50, roster), mode, speaker }] },
      ],
      my_voice: () => ({ channel: 7, muted: false, deafened: false, muted_by_channel: false, audio_notice: null }),
    });
    render(<VoiceScreen myId={roster[0].user_id} />);
    const stage = await screen.findByTestId("stage");
    await waitFor(() => expect(stage.dataset.channel).toBe("Big"));
    expect(screen.getByTestId("stage-mode").textContent).toBe("Mesh");
    expect(screen.queryByTestId("channel-mode-Big")).toBeNull();
    expect(screen.getByTestId("stage-grid").dataset.tiles).toBe("24");
    expect(screen.getByTestId("stage-page").textContent).toBe("1/2");

    mode = "sfu";
    speaker = roster[27].user_id;
    await emit("servers-changed", null);
    await waitFor(() => expect(screen.getByTestId("stage-mode").textContent).toBe("SFU"));
    expect(screen.getByTestId("channel-mode-Big").textContent).toBe("SFU");
    expect(screen.getByTestId("stage").dataset.spotlight).toBe("m28");
    expect(screen.getByTestId("spotlight").querySelector("[data-testid='tile-m28']")).toBeTruthy();
    // 29 others: 24 on the first page, 5 on the second; the speaker is not repeated.
    expect(screen.getByTestId("stage-grid").dataset.tiles).toBe("24");
    fireEvent.click(screen.getByTestId("stage-next"));
    await waitFor(() => expect(screen.getByTestId("stage-page").textContent).toBe("2/2"));
    expect(screen.getByTestId("stage-grid").dataset.tiles).toBe("5");
    expect(screen.getAllByTestId("tile-m28")).toHaveLength(1);
  });

  it("says on a tile when the SFU paused that camera for my connection, and clears it on resume", async () => {
    const roster = Array.from({ length: 10 }, (_, i) => member(i + 1));
    let paused: { user_id: string; screen: boolean }[] = [];
    fakeBackend({
      servers_list: () => [
        {
          id: 1,
          name: "Squad",
          role: "owner",
          channels: [{ ...channelFixture(7, "Big", 50, roster), mode: "sfu", speaker: roster[1].user_id, paused_videos: paused }],
        },
      ],
      my_voice: () => ({ channel: 7, muted: false, deafened: false, muted_by_channel: false, audio_notice: null }),
    });
    render(<VoiceScreen myId={roster[0].user_id} />);
    const tile = await screen.findByTestId("tile-m5");
    expect(tile.dataset.camera).toBe("none");
    expect(screen.queryByTestId("tile-paused-m5")).toBeNull();
    // m5's camera paused for me; m6's screen share (not its camera) paused too.
    paused = [
      { user_id: roster[4].user_id, screen: false },
      { user_id: roster[5].user_id, screen: true },
    ];
    await emit("servers-changed", null);
    await waitFor(() => expect(screen.getByTestId("tile-m5").dataset.camera).toBe("paused"));
    expect(screen.getByTestId("tile-paused-m5").textContent).toContain("your connection");
    expect(screen.getByTestId("tile-m6").dataset.camera).toBe("none");
    expect(screen.queryByTestId("tile-paused-m6")).toBeNull();
    // m6's paused screen share still shows as a share (in the spotlight), saying why it is blank.
    expect(screen.getByTestId("screen-m6").dataset.paused).toBe("true");
    expect(screen.getByTestId("screen-paused-m6").textContent).toContain("your connection");
    paused = [];
    await emit("servers-changed", null);
    await waitFor(() => expect(screen.queryByTestId("tile-paused-m5")).toBeNull());
    expect(screen.getByTestId("tile-m5").dataset.camera).toBe("none");
    // Resumed but no frame yet: no share tile until its frames arrive.
    expect(screen.queryByTestId("screen-m6")).toBeNull();
  });

  it("tells the backend which server is on screen and shows its channels once watched", async () => {
    let watched: number | null = null;
    const squad = server(false);
    const raiders: ServerView = { id: 2, name: "Raiders", role: "member", channels: [channelFixture(9, "Den", 8, [])] };
    const calls = fakeBackend({
      servers_list: () => [squad, raiders].map((s) => (s.id === watched ? s : { ...s, channels: [], hidden: true })),
      servers_watch: (a) => {
        watched = a.server as number | null;
        return null;
      },
    });
    const watches = () => calls.filter((c) => c.cmd === "servers_watch").map((c) => c.args.server);
    render(<VoiceScreen />);
    expect(await screen.findByTestId("channel-Lobby")).toBeTruthy();
    expect(watches()).toEqual([1]);
    selectedServer.value = 2;
    expect(await screen.findByTestId("channel-Den")).toBeTruthy();
    expect(screen.queryByTestId("channels-loading")).toBeNull();
    expect(watches()).toEqual([1, 2]);
    // Logged in again (perhaps a new relay client, which watches nothing): watched again.
    await emit("relay-status-changed", { status: { state: "connected", user_id: "ab".repeat(32), display_name: "me", node: "ws://x/ws" } });
    await waitFor(() => expect(watches()).toEqual([1, 2, 2]));
  });
});
