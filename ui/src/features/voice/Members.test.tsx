import { cleanup, fireEvent, render, screen, waitFor } from "@testing-library/preact";
import { emit } from "@tauri-apps/api/event";
import { afterEach, describe, expect, it } from "vitest";
import { Members } from "./Members";
import { fakeBackend } from "../../test-support";
import type { MemberView, ServerView } from "../../lib/bindings";

afterEach(cleanup);

const key = (b: string) => b.repeat(32);
const server = (role: string): ServerView => ({ id: 3, name: "Squad", role, channels: [] });

function roster(): MemberView[] {
  return [
    { user_id: key("aa"), display_name: "alice", role: "owner", online: true },
    { user_id: key("bb"), display_name: "bob", role: "admin", online: true },
    { user_id: key("cc"), display_name: "cat", role: "member", online: false },
  ];
}

describe("Members", () => {
  it("lets the owner change roles and kick or ban after a second click, and shows refusals", async () => {
    let members = roster();
    let refuse = false;
    const calls = fakeBackend({
      server_members: () => members,
      member_role_set: (a) => {
        members = members.map((m) => (m.user_id === a.userId ? { ...m, role: a.admin ? "admin" : "member" } : m));
        return null;
      },
      member_remove: (a) => {
        if (refuse) throw { code: "rejected", message: "You may not ban them." };
        members = members.filter((m) => m.user_id !== a.userId);
        return null;
      },
    });
    render(<Members server={server("owner")} />);
    expect((await screen.findByTestId("members-count")).textContent).toBe("3 members, 2 online");
    // Nobody acts on the owner (themselves).
    expect(screen.queryByTestId("member-kick-alice")).toBeNull();
    expect(screen.queryByTestId("member-role-alice")).toBeNull();
    expect(screen.getByTestId("member-row-bob").dataset.role).toBe("admin");

    fireEvent.click(screen.getByTestId("member-role-bob"));
    await waitFor(() => expect(screen.getByTestId("member-row-bob").dataset.role).toBe("member"));
    expect(screen.getByTestId("members-notice").textContent).toBe("bob is a member again.");
    expect(calls.find((c) => c.cmd === "member_role_set")?.args).toEqual({ server: 3, userId: key("bb"), admin: false });

    // Kick asks once more; Cancel keeps them.
    fireEvent.click(screen.getByTestId("member-kick-cat"));
    expect(calls.some((c) => c.cmd === "member_remove")).toBe(false);
    fireEvent.click(screen.getByTestId("member-cancel"));
    expect(screen.getByTestId("member-kick-cat")).toBeTruthy();

    refuse = true;
    fireEvent.click(screen.getByTestId("member-ban-cat"));
    fireEvent.click(screen.getByTestId("member-confirm-cat"));
    expect((await screen.findByTestId("members-error")).textContent).toBe("You may not ban them.");
    expect(screen.getByTestId("member-row-cat")).toBeTruthy();

    refuse = false;
    fireEvent.click(screen.getByTestId("member-confirm-cat"));
    await waitFor(() => expect(screen.queryByTestId("member-row-cat")).toBeNull());
    expect(calls.filter((c) => c.cmd === "member_remove").at(-1)?.args).toEqual({ server: 3, userId: key("cc"), ban: true });
    expect(screen.getByTestId("members-notice").textContent).toBe("cat is banned.");
  });

  it("gives an admin kick and ban for members only, and a member no actions", async () => {
    fakeBackend({ server_members: roster });
    render(<Members server={server("admin")} />);
    await screen.findByTestId("member-row-cat");
    expect(screen.getByTestId("member-kick-cat")).toBeTruthy();
    expect(screen.queryByTestId("member-kick-bob")).toBeNull();
    expect(screen.queryByTestId("member-kick-alice")).toBeNull();
    expect(screen.queryByTestId("member-role-cat")).toBeNull();

    cleanup();
    fakeBackend({ server_members: roster });
    render(<Members server={server("member")} />);
    await screen.findByTestId("member-row-cat");
    expect(document.querySelectorAll("[data-testid^=member-kick-], [data-testid^=member-role-]").length).toBe(0);
  });

  it("shows admins who is banned, with Unban; members see no ban list", async () => {
    let bans = [
      { user_id: key("dd"), display_name: "dan" },
      { user_id: key("ee"), display_name: "eve" },
    ];
    const calls = fakeBackend({
      server_members: roster,
      server_bans: () => bans,
      member_unban: (a) => {
        bans = bans.filter((b) => b.user_id !== a.userId);
        return null;
      },
    });
    render(<Members server={server("admin")} />);
    expect(await screen.findByTestId("ban-row-dan")).toBeTruthy();
    expect(screen.getByTestId("bans").textContent).toContain("Banned (2)");
    fireEvent.click(screen.getByTestId("member-unban-dan"));
    await waitFor(() => expect(screen.queryByTestId("ban-row-dan")).toBeNull());
    expect(calls.find((c) => c.cmd === "member_unban")?.args).toEqual({ server: 3, userId: key("dd") });
    expect(screen.getByTestId("members-notice").textContent).toBe("dan is no longer banned: they can rejoin with an invite.");
    expect(screen.getByTestId("ban-row-eve")).toBeTruthy();

    cleanup();
    const seen = fakeBackend({ server_members: roster });
    render(<Members server={server("owner")} />);
    expect(await screen.findByTestId("bans-empty")).toBeTruthy();

    cleanup();
    const member = fakeBackend({ server_members: roster, server_bans: () => bans });
    render(<Members server={server("member")} />);
    await screen.findByTestId("member-row-cat");
    expect(screen.queryByTestId("bans")).toBeNull();
    expect(member.some((c) => c.cmd === "server_bans")).toBe(false);
    expect(seen.some((c) => c.cmd === "server_bans")).toBe(true);
  });

  it("a ban moves them from the members to the ban list", async () => {
    let members = roster();
    let bans: { user_id: string; display_name: string }[] = [];
    fakeBackend({
      server_members: () => members,
      server_bans: () => bans,
      member_remove: (a) => {
        const m = members.find((x) => x.user_id === a.userId)!;
        members = members.filter((x) => x !== m);
        if (a.ban) bans = [{ user_id: m.user_id, display_name: m.display_name }];
        return null;
      },
    });
    render(<Members server={server("owner")} />);
    await screen.findByTestId("bans-empty");
    fireEvent.click(screen.getByTestId("member-ban-cat"));
    fireEvent.click(screen.getByTestId("member-confirm-cat"));
    expect(await screen.findByTestId("ban-row-cat")).toBeTruthy();
    expect(screen.queryByTestId("member-row-cat")).toBeNull();
    expect(screen.queryByTestId("bans-empty")).toBeNull();
  });

  it("reloads while open when the relay says this server's members changed", async () => {
    let members = roster();
    const calls = fakeBackend({ server_members: () => members });
    render(<Members server={server("owner")} />);
    expect((await screen.findByTestId("members-count")).textContent).toBe("3 members, 2 online");
    members = [...members, { user_id: key("dd"), display_name: "dan", role: "member", online: true }];
    const loads = () => calls.filter((c) => c.cmd === "server_members").length;
    await emit("members-changed", { server: 9 });
    await new Promise((r) => setTimeout(r, 200));
    expect(loads()).toBe(1);
    await emit("members-changed", { server: 3 });
    await waitFor(() => expect(screen.getByTestId("members-count").textContent).toBe("4 members, 3 online"));
    expect(screen.getByTestId("member-row-dan")).toBeTruthy();
  });
});
