import { cleanup, fireEvent, render, screen, waitFor } from "@testing-library/preact";
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
});
