import { cleanup, fireEvent, render, screen, waitFor } from "@testing-library/preact";
import { afterEach, describe, expect, it, vi } from "vitest";
import { ServerSettings, serverNameProblem } from "./ServerSettings";
import { ChannelList } from "./ChannelList";
import { channelFixture, fakeBackend } from "../../test-support";
import type { ServerView } from "../../lib/bindings";
import { resetVoiceStore, selectedServer } from "./store";

afterEach(() => {
  cleanup();
  resetVoiceStore();
});

const server = (role: string): ServerView => ({
  id: 3,
  name: "Squad",
  role,
  channels: [channelFixture(1, "Lobby", 8, []), channelFixture(2, "Games", 8, [])],
});

describe("ServerSettings", () => {
  it("checks a new name before the relay, renames, and shows the relay's refusal", async () => {
    let refuse = false;
    const calls = fakeBackend({
      server_rename: () => {
        if (refuse) throw { code: "rejected", message: "Only the server's owner and admins can rename it." };
        return null;
      },
    });
    render(<ServerSettings server={server("owner")} onClose={() => {}} />);
    const input = screen.getByTestId("server-rename-input") as HTMLInputElement;
    expect(input.value).toBe("Squad");
    // The same name: nothing to save.
    expect((screen.getByTestId("server-rename-save") as HTMLButtonElement).disabled).toBe(true);
    fireEvent.input(input, { target: { value: "   " } });
    fireEvent.click(screen.getByTestId("server-rename-save"));
    expect(screen.getByTestId("server-settings-error").textContent).toBe("A server needs a name.");
    fireEvent.input(input, { target: { value: "x".repeat(65) } });
    fireEvent.click(screen.getByTestId("server-rename-save"));
    expect(screen.getByTestId("server-settings-error").textContent).toBe("A server name is at most 64 characters.");
    expect(calls.some((c) => c.cmd === "server_rename")).toBe(false);

    fireEvent.input(input, { target: { value: "  Crew " } });
    fireEvent.click(screen.getByTestId("server-rename-save"));
    expect((await screen.findByTestId("server-settings-notice")).textContent).toBe("Renamed to Crew.");
    expect(calls.find((c) => c.cmd === "server_rename")?.args).toEqual({ server: 3, nameText: "Crew" });
    // The server list is refetched (the relay's server_updated reaches the others).
    await waitFor(() => expect(calls.some((c) => c.cmd === "servers_list")).toBe(true));

    refuse = true;
    fireEvent.input(input, { target: { value: "Crew 2" } });
    await waitFor(() => expect((screen.getByTestId("server-rename-save") as HTMLButtonElement).disabled).toBe(false));
    fireEvent.click(screen.getByTestId("server-rename-save"));
    expect((await screen.findByTestId("server-settings-error")).textContent).toBe("Only the server's owner and admins can rename it.");
  });

  it("lets the owner delete only after typing the server's name, for everyone", async () => {
    const onClose = vi.fn();
    const calls = fakeBackend({ server_delete: () => null });
    selectedServer.value = 3;
    render(<ServerSettings server={server("owner")} onClose={onClose} />);
    expect(screen.queryByTestId("server-leave")).toBeNull();
    expect(screen.getByTestId("server-delete-warning").textContent).toContain("deletes its 2 voice channels and removes every member, for everyone");
    fireEvent.click(screen.getByTestId("server-delete"));
    const confirm = screen.getByTestId("server-delete-confirm") as HTMLButtonElement;
    expect(confirm.disabled).toBe(true);
    fireEvent.input(screen.getByTestId("server-delete-confirm-input"), { target: { value: "squad" } });
    expect((screen.getByTestId("server-delete-confirm") as HTMLButtonElement).disabled).toBe(true);
    fireEvent.click(screen.getByTestId("server-delete-cancel"));
    expect(screen.queryByTestId("server-delete-confirm")).toBeNull();
    expect(calls.some((c) => c.cmd === "server_delete")).toBe(false);

    fireEvent.click(screen.getByTestId("server-delete"));
    fireEvent.input(screen.getByTestId("server-delete-confirm-input"), { target: { value: "Squad" } });
    fireEvent.click(screen.getByTestId("server-delete-confirm"));
    await waitFor(() => expect(onClose).toHaveBeenCalled());
    expect(calls.find((c) => c.cmd === "server_delete")?.args).toEqual({ server: 3 });
    expect(selectedServer.value).toBeNull();
    await waitFor(() => expect(calls.some((c) => c.cmd === "servers_list")).toBe(true));
  });

  it("lets a member leave after a second click, and not rename or delete", async () => {
    const onClose = vi.fn();
    const calls = fakeBackend({ server_leave: () => null });
    render(<ServerSettings server={server("member")} onClose={onClose} />);
    expect(screen.queryByTestId("server-rename-input")).toBeNull();
    expect(screen.queryByTestId("server-delete")).toBeNull();
    fireEvent.click(screen.getByTestId("server-leave"));
    expect(screen.getByTestId("server-leave-warning").textContent).toBe("Leave Squad? Coming back takes a new invite.");
    fireEvent.click(screen.getByTestId("server-leave-cancel"));
    expect(calls.some((c) => c.cmd === "server_leave")).toBe(false);
    fireEvent.click(screen.getByTestId("server-leave"));
    fireEvent.click(screen.getByTestId("server-leave-confirm"));
    await waitFor(() => expect(onClose).toHaveBeenCalled());
    expect(calls.find((c) => c.cmd === "server_leave")?.args).toEqual({ server: 3 });
  });

  it("gives an admin rename and leave, not delete; a refused leave stays open with the reason", async () => {
    const onClose = vi.fn();
    fakeBackend({
      server_leave: () => {
        throw { code: "rejected", message: "The owner cannot leave their server: delete it instead (or keep it)." };
      },
    });
    render(<ServerSettings server={server("admin")} onClose={onClose} />);
    expect(screen.getByTestId("server-rename-input")).toBeTruthy();
    expect(screen.queryByTestId("server-delete")).toBeNull();
    fireEvent.click(screen.getByTestId("server-leave"));
    fireEvent.click(screen.getByTestId("server-leave-confirm"));
    expect((await screen.findByTestId("server-settings-error")).textContent).toMatch(/^The owner cannot leave/);
    expect(onClose).not.toHaveBeenCalled();
  });

  it("opens from the gear beside the server's name, for every role", async () => {
    fakeBackend();
    render(<ChannelList server={server("member")} />);
    fireEvent.click(screen.getByTestId("server-settings-open-Squad"));
    expect(screen.getByTestId("server-settings-dialog")).toBeTruthy();
    expect(screen.getByTestId("server-leave")).toBeTruthy();
    fireEvent.click(screen.getByTestId("server-settings-dialog-close"));
    expect(screen.queryByTestId("server-settings-dialog")).toBeNull();
  });

  it("names: blank and too long are refused, the rest is the relay's", () => {
    expect(serverNameProblem("")).toBe("A server needs a name.");
    expect(serverNameProblem("é".repeat(64))).toBeNull();
    expect(serverNameProblem("é".repeat(65))).not.toBeNull();
  });
});
