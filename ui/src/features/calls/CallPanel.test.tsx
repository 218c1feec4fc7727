import { cleanup, fireEvent, render, screen, waitFor } from "@testing-library/preact";
import { emit } from "@tauri-apps/api/event";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { CallPanel, currentCall } from "./CallPanel";
import { FriendsScreen } from "../friends/FriendsScreen";
import { fakeBackend } from "../../test-support";
import { openStreams, peerStats, resetStreams } from "../../lib/streams";
import type { CallView, PeerStatsView } from "../../lib/bindings";
import type { Channel } from "@tauri-apps/api/core";

const bob = { user_id: "b0".repeat(32), display_name: "bob" };
const idle: CallView = { phase: "idle", call: null, peer: null, peer_speaking: false, ended: null };
const ringing: CallView = { phase: "incoming", call: 7, peer: bob, peer_speaking: false, ended: null };

beforeEach(() => {
  currentCall.value = idle;
  resetStreams();
});
afterEach(cleanup);

describe("CallPanel", () => {
  it("shows an incoming call, accepts it, shows the peer talking and the link quality, hangs up", async () => {
    let statsChannel: Channel<PeerStatsView> | null = null;
    const calls = fakeBackend({
      call_get: () => ringing,
      call_accept: () => ({ ...ringing, phase: "connecting" }),
      call_hangup: () => ({ ...idle, ended: "You hung up." }),
      stats_subscribe: (a) => {
        statsChannel = a.onStats as Channel<PeerStatsView>;
        return null;
      },
    });
    await openStreams();
    render(<CallPanel />);
    expect((await screen.findByTestId("call-status")).textContent).toBe("bob is calling you");
    fireEvent.click(screen.getByTestId("call-accept"));
    await waitFor(() => expect(calls.some((c) => c.cmd === "call_accept")).toBe(true));
    expect((await screen.findByTestId("call-bar")).dataset.phase).toBe("connecting");

    await emit("call-changed", { call: { ...ringing, phase: "active", peer_speaking: true } });
    await waitFor(() => expect(screen.getByTestId("call-status").textContent).toBe("In a call with bob"));
    expect(screen.getByTestId("call-peer").dataset.speaking).toBe("true");
    expect(screen.getByTestId("call-stats").textContent).toBe("Measuring connection…");
    statsChannel!.onmessage({
      user_id: bob.user_id,
      rtt_ms: 42,
      loss_pct: 1.5,
      jitter_ms: 3,
      buffer_ms: 40,
      packets_received: 100,
      quality: "good",
    });
    await waitFor(() => expect(screen.getByTestId("call-stats").dataset.rtt).toBe("42"));
    expect(screen.getByTestId("call-stats").textContent).toContain("RTT 42 ms · loss 1.5%");
    expect(peerStats.value[bob.user_id].quality).toBe("good");

    fireEvent.click(screen.getByTestId("call-hangup"));
    expect((await screen.findByTestId("call-ended")).textContent).toBe("You hung up.");
    fireEvent.click(screen.getByTestId("call-dismiss"));
    await waitFor(() => expect(screen.queryByTestId("call-bar")).toBeNull());
  });

  it("says why a call ended when the other side leaves, and shows refusals", async () => {
    fakeBackend({
      call_get: () => ringing,
      call_decline: () => {
        throw { code: "not_found", message: "There is no incoming call to decline." };
      },
    });
    render(<CallPanel />);
    fireEvent.click(await screen.findByTestId("call-decline"));
    expect((await screen.findByTestId("call-error")).textContent).toBe("There is no incoming call to decline.");
    await emit("call-changed", { call: { ...idle, ended: "bob hung up." } });
    await waitFor(() => expect(screen.getByTestId("call-bar").dataset.phase).toBe("idle"));
  });

  it("calls an online friend from the friends screen; offline friends cannot be called", async () => {
    const calls = fakeBackend({
      friends_list: () => ({
        friends: [
          { ...bob, online: true, in_voice: false, in_call: false },
          { user_id: "cc".repeat(32), display_name: "cy", online: false, in_voice: false, in_call: false },
        ],
        incoming: [],
        outgoing: [],
      }),
      call_start: (a) => ({ phase: "outgoing", call: 3, peer: { ...bob, user_id: String(a.userId) }, peer_speaking: false, ended: null }),
    });
    render(
      <>
        <CallPanel />
        <FriendsScreen />
      </>,
    );
    expect(((await screen.findByTestId("call-cy")) as HTMLButtonElement).disabled).toBe(true);
    fireEvent.click(screen.getByTestId("call-bob"));
    expect((await screen.findByTestId("call-status")).textContent).toBe("Calling bob…");
    expect(calls.find((c) => c.cmd === "call_start")?.args).toEqual({ userId: bob.user_id });
    expect(screen.getByTestId("call-hangup").textContent).toBe("Cancel");
    expect((screen.getByTestId("call-bob") as HTMLButtonElement).disabled).toBe(true);
  });
});
