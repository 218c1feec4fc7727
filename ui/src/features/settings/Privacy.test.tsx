import { cleanup, fireEvent, render, screen, waitFor } from "@testing-library/preact";
import { emit } from "@tauri-apps/api/event";
import { afterEach, describe, expect, it } from "vitest";
import { fakeBackend } from "../../test-support";
import type { PrivacyStatus } from "../../lib/bindings";
import { PrivacyPanel } from "./PrivacyPanel";
import { ChannelPrivacy } from "./ChannelPrivacy";

afterEach(cleanup);

const ME = "ab".repeat(32);
const BOB = "b0".repeat(32);
const CAROL = "c0".repeat(32);
const roster = [
  { user_id: ME, display_name: "alice" },
  { user_id: BOB, display_name: "bob" },
  { user_id: CAROL, display_name: "carol" },
];
const BOB_NUMBER = "12345 67890 12345 67890 12345 67890 12345 67890 12345 67890 12345 67890";

describe("PrivacyPanel", () => {
  it("loads the saved switches, saves each change and says what it costs", async () => {
    let saved = { hide_ip: false, e2ee: true };
    const calls = fakeBackend({
      privacy_get: () => saved,
      privacy_set: (a) => (saved = a.settings as typeof saved),
    });
    render(<PrivacyPanel />);
    const hide = (await screen.findByTestId("privacy-hide-ip")) as HTMLInputElement;
    const e2ee = screen.getByTestId("privacy-e2ee") as HTMLInputElement;
    expect(hide.checked).toBe(false);
    expect(e2ee.checked).toBe(true);
    expect(screen.getByTestId("privacy-hide-ip-cost").textContent).toContain("latency");
    expect(screen.getByTestId("privacy-e2ee-cost").textContent).toContain("cannot hear you");
    fireEvent.click(hide);
    await waitFor(() => expect(screen.getByTestId("privacy-status").textContent).toContain("Saved"));
    expect(calls.filter((c) => c.cmd === "privacy_set").map((c) => c.args.settings)).toEqual([
      { hide_ip: true, e2ee: true },
    ]);
    fireEvent.click(screen.getByTestId("privacy-e2ee"));
    await waitFor(() => expect(saved).toEqual({ hide_ip: true, e2ee: false }));
    expect((screen.getByTestId("privacy-e2ee") as HTMLInputElement).checked).toBe(false);
  });

  it("shows why a save failed", async () => {
    fakeBackend({
      privacy_set: () => {
        throw { code: "storage", message: "saving privacy settings: disk full" };
      },
    });
    render(<PrivacyPanel />);
    fireEvent.click(await screen.findByTestId("privacy-e2ee"));
    await waitFor(() => expect(screen.getByTestId("privacy-error").textContent).toContain("disk full"));
  });
});

describe("ChannelPrivacy", () => {
  const status = (over: Partial<PrivacyStatus>): PrivacyStatus => ({
    channel: 5,
    hide_ip: false,
    e2ee: true,
    epoch: 1,
    decrypted_frames: 120,
    refused_frames: 3,
    members: [],
    ...over,
  });

  it("shows the lock with who sent keys, the safety numbers, and follows the key exchange", async () => {
    let current = status({
      members: [{ user_id: BOB, key_epoch: 1, key_refused: null, relayed: null, safety_number: BOB_NUMBER }],
    });
    fakeBackend({
      privacy_status: () => current,
      safety_number: (a) => (a.userId === CAROL ? "99999 ".repeat(11) + "99999" : "x"),
    });
    render(<ChannelPrivacy channel={5} sfu={true} roster={roster} myId={ME} />);
    const badge = await screen.findByTestId("stage-e2ee");
    expect(badge.textContent).toContain("E2EE 1/2");
    expect(badge.dataset.keys).toBe("1");
    expect(screen.queryByTestId("stage-hide-ip")).toBeNull();
    fireEvent.click(badge);
    await screen.findByTestId("safety-dialog");
    expect(screen.getByTestId("safety-number-bob").textContent).toBe(BOB_NUMBER);
    expect(screen.getByTestId("safety-state-bob").textContent).toContain("Encrypted (key 1)");
    expect(screen.getByTestId("safety-state-carol").textContent).toContain("not encrypted");
    await waitFor(() => expect(screen.getByTestId("safety-number-carol").textContent).toMatch(/^(\d{5} ){11}\d{5}$/));
    expect(screen.queryByTestId("safety-alice")).toBeNull();
    expect(screen.getByTestId("e2ee-frames").dataset.decrypted).toBe("120");
    // Carol's key arrives, after a rotation: the backend says so, the badge follows.
    current = status({
      epoch: 2,
      members: [
        { user_id: BOB, key_epoch: 2, key_refused: null, relayed: null, safety_number: BOB_NUMBER },
        { user_id: CAROL, key_epoch: 1, key_refused: null, relayed: null, safety_number: null },
      ],
    });
    await emit("privacy-changed", {});
    await waitFor(() => expect(screen.getByTestId("stage-e2ee").dataset.keys).toBe("2"));
    expect(screen.getByTestId("safety-state-carol").textContent).toContain("Encrypted (key 1)");
    fireEvent.click(screen.getByTestId("safety-dialog-close"));
    expect(screen.queryByTestId("safety-dialog")).toBeNull();
  });

  it("says when my IP is hidden, and nothing for another channel or with both off", async () => {
    let current = status({
      e2ee: false,
      hide_ip: true,
      members: [{ user_id: BOB, key_epoch: null, key_refused: null, relayed: true, safety_number: null }],
    });
    fakeBackend({ privacy_status: () => current });
    const view = render(<ChannelPrivacy channel={5} sfu={false} roster={roster} myId={ME} />);
    const hidden = await screen.findByTestId("stage-hide-ip");
    expect(hidden.dataset.relayed).toBe("1");
    expect(hidden.title).toContain("latency");
    expect(screen.queryByTestId("stage-e2ee")).toBeNull();
    view.unmount();
    current = status({ channel: 9 });
    render(<ChannelPrivacy channel={5} sfu={true} roster={roster} myId={ME} />);
    await waitFor(() => expect(screen.queryByTestId("stage-e2ee")).toBeNull());
    expect(screen.queryByTestId("stage-hide-ip")).toBeNull();
  });
});
