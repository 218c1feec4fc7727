import { cleanup, fireEvent, render, screen, waitFor } from "@testing-library/preact";
import { emit } from "@tauri-apps/api/event";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { App } from "../../App";
import { alice, channelFixture, fakeBackend } from "../../test-support";
import { resetVoiceStore } from "../voice/store";
import { VoiceScreen } from "../voice/VoiceScreen";
import type { MyVoice, ServerView } from "../../lib/bindings";

beforeEach(resetVoiceStore);
afterEach(cleanup);

const bot = { user_id: "cd".repeat(32), display_name: "bot", muted: true, deafened: false, speaking: false };
const me = { user_id: alice.public_key, display_name: "alice", muted: false, deafened: false, speaking: true };

function squad(roster = [bot]): ServerView {
  return {
    id: 1,
    name: "Squad",
    role: "owner",
    channels: [channelFixture(7, "Lobby", 8, roster), channelFixture(8, "Raid", 4, [])],
  };
}

const inLobby: MyVoice = { channel: 7, muted: false, deafened: false, muted_by_channel: false, audio_notice: null };

describe("server rail", () => {
  it("adds a server from a dialog, lists it as a round button and selects it", async () => {
    let list: ServerView[] = [];
    const calls = fakeBackend({
      identity_get: () => alice,
      servers_list: () => list,
      server_create: (a) => {
        list = [{ ...squad(), id: 3, name: String(a.nameText), channels: [] }];
        return list[0];
      },
    });
    render(<App />);
    expect(await screen.findByTestId("no-servers")).toBeTruthy();
    fireEvent.click(screen.getByTestId("add-server"));
    const dialog = await screen.findByTestId("add-server-dialog");
    expect(dialog.getAttribute("role")).toBe("dialog");
    fireEvent.input(screen.getByTestId("new-server-name"), { target: { value: "Night Owls" } });
    fireEvent.click(screen.getByTestId("create-server"));
    const button = await screen.findByTestId("server-Night Owls");
    expect(button.textContent).toBe("NO");
    expect(button.className).toContain("active");
    await waitFor(() => expect(screen.queryByTestId("add-server-dialog")).toBeNull());
    expect(screen.getByTestId("channels-Night Owls")).toBeTruthy();
    expect(calls.find((c) => c.cmd === "server_create")?.args).toEqual({ nameText: "Night Owls" });
  });

  it("joins with an invite code and shows the relay's refusal in the dialog", async () => {
    fakeBackend({
      identity_get: () => alice,
      invite_join: () => {
        throw { code: "rejected", message: "That invite has expired." };
      },
    });
    render(<App />);
    fireEvent.click(await screen.findByTestId("add-server"));
    fireEvent.input(await screen.findByTestId("invite-code-input"), { target: { value: "abc" } });
    fireEvent.click(screen.getByTestId("invite-join"));
    expect((await screen.findByTestId("add-server-error")).textContent).toBe("That invite has expired.");
    fireEvent.click(screen.getByTestId("add-server-dialog-close"));
    await waitFor(() => expect(screen.queryByTestId("add-server-dialog")).toBeNull());
  });

  it("opens settings as an overlay that Escape or the rail closes", async () => {
    fakeBackend({ identity_get: () => alice, servers_list: () => [squad()] });
    render(<App />);
    fireEvent.click(await screen.findByTestId("nav-settings"));
    const overlay = await screen.findByTestId("settings-overlay");
    expect(overlay.contains(await screen.findByTestId("bandwidth-panel"))).toBe(true);
    // The channel list stays underneath, not replaced.
    expect(screen.getByTestId("channel-Lobby")).toBeTruthy();
    fireEvent.keyDown(window, { key: "Escape" });
    await waitFor(() => expect(screen.queryByTestId("settings-overlay")).toBeNull());
    fireEvent.click(screen.getByTestId("nav-settings"));
    await screen.findByTestId("settings-overlay");
    fireEvent.click(screen.getByTestId("nav-friends"));
    await waitFor(() => expect(screen.queryByTestId("settings-overlay")).toBeNull());
    expect(await screen.findByTestId("friends-screen")).toBeTruthy();
    fireEvent.click(screen.getByTestId("nav-voice"));
    expect(await screen.findByTestId("channel-Lobby")).toBeTruthy();
  });
});

describe("channel list", () => {
  it("shows who sits in every channel, before joining, with mute badges", async () => {
    fakeBackend({ servers_list: () => [squad()] });
    render(<VoiceScreen />);
    const member = await screen.findByTestId("member-bot");
    expect(member.textContent).toContain("muted");
    expect(screen.getByTestId("channel-Raid")).toBeTruthy();
    expect(screen.getByTestId("stage").className).toContain("empty");
    expect(screen.queryByTestId("control-leave")).toBeNull();
  });

  it("creates an invite in a dialog", async () => {
    fakeBackend({ servers_list: () => [squad()], invite_create: () => "h7Kq2" });
    render(<VoiceScreen />);
    fireEvent.click(await screen.findByTestId("invite-Squad"));
    expect((await screen.findByTestId("invite-code-Squad")).textContent).toBe("h7Kq2");
    expect(screen.getByTestId("invite-dialog").getAttribute("aria-modal")).toBe("true");
    fireEvent.click(screen.getByTestId("invite-dialog-close"));
    await waitFor(() => expect(screen.queryByTestId("invite-dialog")).toBeNull());
  });
});

describe("stage and control bar", () => {
  it("shows my channel's participants as tiles with speaking rings and mute badges", async () => {
    let roster = [bot, me];
    fakeBackend({ servers_list: () => [squad(roster)], my_voice: () => inLobby });
    render(<VoiceScreen myId={alice.public_key} />);
    const tile = await screen.findByTestId("tile-bot");
    expect(screen.getByTestId("stage").dataset.channel).toBe("Lobby");
    expect(tile.dataset.speaking).toBe("false");
    expect(screen.getByTestId("tile-muted-bot")).toBeTruthy();
    expect(screen.getByTestId("tile-alice").textContent).toContain("(you)");
    expect(screen.getByTestId("tile-alice").querySelector(".speaking-ring")).toBeTruthy();
    expect(screen.queryByTestId("volume-alice")).toBeNull();
    expect(screen.getByTestId("volume-bot")).toBeTruthy();
    roster = [{ ...bot, speaking: true, muted: false }, me];
    await emit("servers-changed", null);
    await waitFor(() => expect(screen.getByTestId("tile-bot").dataset.speaking).toBe("true"));
    expect(screen.queryByTestId("tile-muted-bot")).toBeNull();
  });

  it("mutes, deafens and leaves; share opens the picker in a channel", async () => {
    let voice = inLobby;
    const calls = fakeBackend({
      servers_list: () => [squad([bot, me])],
      my_voice: () => voice,
      voice_state_set: (a) => (voice = { ...voice, muted: Boolean(a.muted), deafened: Boolean(a.deafened) }),
      channel_leave: () => (voice = { ...voice, channel: null }),
    });
    render(<VoiceScreen myId={alice.public_key} />);
    const share = (await screen.findByTestId("share")) as HTMLButtonElement;
    await waitFor(() => expect(share.disabled).toBe(false));
    expect(share.title).toBe("Share your screen or a window");
    await waitFor(() => expect((screen.getByTestId("camera") as HTMLButtonElement).disabled).toBe(false));
    fireEvent.click(screen.getByTestId("mute"));
    await waitFor(() => expect(screen.getByTestId("mute").getAttribute("aria-pressed")).toBe("true"));
    expect(screen.getByTestId("mute").textContent).toBe("Unmute");
    fireEvent.click(screen.getByTestId("deafen"));
    await waitFor(() => expect(calls.filter((c) => c.cmd === "voice_state_set").at(-1)?.args).toEqual({ muted: true, deafened: true }));
    fireEvent.click(await screen.findByTestId("control-leave"));
    await waitFor(() => expect(screen.getByTestId("stage").className).toContain("empty"));
    expect(screen.queryByTestId("control-leave")).toBeNull();
    expect(screen.getByTestId("join-Lobby")).toBeTruthy();
  });

  it("opens channel settings as a dialog", async () => {
    fakeBackend({ servers_list: () => [squad()] });
    render(<VoiceScreen />);
    fireEvent.click(await screen.findByTestId("channel-edit-Lobby"));
    const dialog = await screen.findByTestId("channel-settings-dialog");
    expect(dialog.contains(screen.getByTestId("channel-settings-Lobby"))).toBe(true);
    fireEvent.click(screen.getByTestId("perm-cancel"));
    await waitFor(() => expect(screen.queryByTestId("channel-settings-dialog")).toBeNull());
  });
});
