import { cleanup, fireEvent, render, screen, waitFor } from "@testing-library/preact";
import { emit } from "@tauri-apps/api/event";
import { afterEach, describe, expect, it, vi } from "vitest";
import { LinkPrompt } from "./LinkPrompt";
import { FriendsScreen } from "../friends/FriendsScreen";
import { alice, fakeBackend } from "../../test-support";
import type { LinkView } from "../../lib/bindings";
import { selectedServer } from "../voice/store";

afterEach(cleanup);

const invite: LinkView = { kind: "invite", code: "Ab12Cd34", link: "hum://invite/Ab12Cd34" };
const friend: LinkView = { kind: "friend", who: "@ada", link: "hum://friend/@ada" };

describe("LinkPrompt", () => {
  it("asks before joining an invite, then shows the next link, which can be dismissed", async () => {
    let pending: LinkView[] = [invite, friend];
    const joined = vi.fn();
    const calls = fakeBackend({
      links_take: () => {
        const out = pending;
        pending = [];
        return out;
      },
      invite_join: () => ({ id: 3, name: "Squad", role: "member", channels: [] }),
    });
    render(<LinkPrompt onJoined={joined} />);
    expect((await screen.findByTestId("link-what")).textContent).toContain("Ab12Cd34");
    expect(calls.some((c) => c.cmd === "invite_join")).toBe(false);
    fireEvent.click(screen.getByTestId("link-accept"));
    await waitFor(() => expect(screen.getByTestId("link-what").textContent).toContain("@ada"));
    expect(calls.find((c) => c.cmd === "invite_join")?.args).toEqual({ code: "Ab12Cd34" });
    expect(joined).toHaveBeenCalledTimes(1);
    expect(selectedServer.value).toBe(3);
    fireEvent.click(screen.getByTestId("link-dismiss"));
    await waitFor(() => expect(screen.queryByTestId("link-dialog")).toBeNull());
    expect(calls.some((c) => c.cmd === "friend_request")).toBe(false);
  });

  it("picks up links opened while it runs and keeps the dialog open with the reason on failure", async () => {
    let pending: LinkView[] = [];
    const calls = fakeBackend({
      links_take: () => {
        const out = pending;
        pending = [];
        return out;
      },
      friend_request: () => {
        throw { code: "not_found", message: "Nobody has the handle @ada on this relay." };
      },
    });
    render(<LinkPrompt />);
    await waitFor(() => expect(calls.filter((c) => c.cmd === "links_take").length).toBe(1));
    expect(screen.queryByTestId("link-dialog")).toBeNull();
    pending = [friend];
    await emit("link-opened", null);
    expect((await screen.findByTestId("link-what")).textContent).toContain("@ada");
    fireEvent.click(screen.getByTestId("link-accept"));
    expect((await screen.findByTestId("link-error")).textContent).toContain("Nobody has the handle");
    expect(calls.find((c) => c.cmd === "friend_request")?.args).toEqual({ who: "hum://friend/@ada" });
    expect(screen.getByTestId("link-dialog")).toBeTruthy();
  });
});

describe("FriendsScreen: my card", () => {
  it("shows my friend link and key, saves a handle and copies the link", async () => {
    const writeText = vi.fn().mockResolvedValue(undefined);
    Object.defineProperty(navigator, "clipboard", { value: { writeText }, configurable: true });
    const calls = fakeBackend({
      handle_set: (a) => (a.handle ? "@" + String(a.handle).replace(/^@/, "").toLowerCase() : null),
    });
    render(<FriendsScreen />);
    const link = (await screen.findByTestId("friend-link")) as HTMLInputElement;
    await waitFor(() => expect(link.value).toBe(`hum://friend/${alice.public_key}`));
    expect(screen.getByTestId("my-key").textContent).toBe(alice.public_key);
    fireEvent.input(screen.getByTestId("my-handle"), { target: { value: "@Ada" } });
    fireEvent.click(screen.getByTestId("my-handle-save"));
    expect((await screen.findByTestId("my-card-status")).textContent).toBe("Others can add you as @ada.");
    expect(calls.find((c) => c.cmd === "handle_set")?.args).toEqual({ handle: "@Ada" });
    fireEvent.click(screen.getByTestId("friend-link-copy"));
    await waitFor(() => expect(writeText).toHaveBeenCalledWith(`hum://friend/${alice.public_key}`));
    expect(screen.getByTestId("my-card-status").textContent).toBe("Friend link copied.");
  });
});
