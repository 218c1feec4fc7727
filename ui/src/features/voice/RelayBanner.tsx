import { useSignal } from "@preact/signals";
import { useEffect } from "preact/hooks";
import { commands, events, type RelayStatus } from "../../lib/bindings";
import { unwrap } from "../../lib/api";

/** The host (and port) of a relay address, for showing which relay or cluster node I am on. */
export function nodeName(url: string): string {
  try {
    return new URL(url).host || url;
  } catch {
    return url;
  }
}

export function describe(s: RelayStatus): { kind: "ok" | "connecting" | "down"; text: string } {
  switch (s.state) {
    case "connected":
      return { kind: "ok", text: `Connected to ${nodeName(s.node)}` };
    case "connecting":
      return { kind: "connecting", text: s.attempt > 1 ? `Reconnecting (attempt ${s.attempt})…` : "Connecting…" };
    case "disconnected":
      return {
        kind: "down",
        text:
          s.retry_in_ms === null
            ? `Relay unavailable: ${s.reason}`
            : `Relay unavailable: ${s.reason}. Retrying in ${Math.max(1, Math.round(s.retry_in_ms / 1000))} s…`,
      };
    case "offline":
      return { kind: "down", text: "Not connected" };
    case "stopped":
      return { kind: "down", text: "Disconnected" };
  }
}

/** The relay connection state; hidden while connected. */
export function RelayBanner() {
  const status = useSignal<RelayStatus>({ state: "offline" });
  useEffect(() => {
    unwrap(commands.relayStatus())
      .then((s) => (status.value = s))
      .catch(() => {});
    let unlisten: (() => void) | undefined;
    events.relayStatusChanged
      .listen((e) => (status.value = e.payload.status))
      .then((u) => (unlisten = u))
      .catch(() => {});
    return () => unlisten?.();
  }, []);
  const d = describe(status.value);
  return (
    <div class={`relay-state ${d.kind}`} data-testid="relay-state" data-state={status.value.state}>
      <span class={`dot ${d.kind === "ok" ? "online" : ""}`} /> {d.text}
    </div>
  );
}
