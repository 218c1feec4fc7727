import type { ComponentChildren } from "preact";
import { useSignal } from "@preact/signals";
import { commands } from "../../lib/bindings";
import { messageOf, unwrap } from "../../lib/api";
import { TextSubmitRow } from "../shared/TextSubmitRow";
import { currentServer, refreshVoice, selectedServer, servers } from "../voice/store";
import { FriendsIcon, GearIcon, HumIcon, PlusIcon } from "../voice/icons";
import { Dialog } from "./Dialog";

export type View = "voice" | "friends";

function initials(name: string): string {
  const words = name.trim().split(/\s+/).filter(Boolean);
  return (words.length > 1 ? words[0][0] + words[1][0] : name.slice(0, 2)).toUpperCase();
}

/**
 * The rail at the left edge: home (voice), friends, one round button per server, "add a server"
 * (a dialog to create one or join with an invite code) and settings at the bottom.
 */
export function ServerRail(props: { view: View; settingsOpen: boolean; onView: (v: View) => void; onSettings: () => void }) {
  const adding = useSignal(false);
  const current = currentServer();
  const railButton = (testId: string, label: string, active: boolean, onClick: () => void, child: ComponentChildren) => (
    <button class={`rail-button ${active ? "active" : ""}`} data-testid={testId} title={label} aria-label={label} onClick={onClick}>
      {child}
    </button>
  );
  return (
    <nav class="rail" aria-label="Servers">
      {railButton("nav-voice", "Voice channels", props.view === "voice" && !props.settingsOpen, () => props.onView("voice"), <HumIcon size={22} />)}
      {railButton("nav-friends", "Friends", props.view === "friends" && !props.settingsOpen, () => props.onView("friends"), <FriendsIcon size={22} />)}
      <div class="rail-divider" />
      {servers.value?.map((s) =>
        railButton(
          `server-${s.name}`,
          s.name,
          props.view === "voice" && current?.id === s.id,
          () => {
            selectedServer.value = s.id;
            props.onView("voice");
          },
          <span class="rail-initials">{initials(s.name)}</span>,
        ),
      )}
      {railButton("add-server", "Add a server", adding.value, () => (adding.value = true), <PlusIcon size={22} />)}
      <div class="rail-spacer" />
      {railButton("nav-settings", "Settings", props.settingsOpen, props.onSettings, <GearIcon size={22} />)}
      {adding.value && (
        <AddServerDialog
          onClose={() => (adding.value = false)}
          onAdded={(id) => {
            adding.value = false;
            selectedServer.value = id;
            props.onView("voice");
          }}
        />
      )}
    </nav>
  );
}

/** Create a server, or join one with an invite code. */
export function AddServerDialog(props: { onClose: () => void; onAdded: (server: number) => void }) {
  const name = useSignal("");
  const code = useSignal("");
  const error = useSignal<string | null>(null);
  async function add(f: () => Promise<{ id: number }>) {
    try {
      error.value = null;
      const s = await f();
      await refreshVoice();
      props.onAdded(s.id);
    } catch (e) {
      error.value = messageOf(e);
    }
  }
  return (
    <Dialog title="Add a server" testId="add-server-dialog" onClose={props.onClose}>
      <h3>Create your own</h3>
      <TextSubmitRow
        field={name}
        placeholder="New server name"
        inputTestId="new-server-name"
        button="Create server"
        buttonTestId="create-server"
        onSubmit={() => add(() => unwrap(commands.serverCreate(name.value)))}
      />
      <h3>Join with an invite</h3>
      <TextSubmitRow
        field={code}
        placeholder="Invite code"
        inputTestId="invite-code-input"
        button="Join server"
        buttonTestId="invite-join"
        onSubmit={() => add(() => unwrap(commands.inviteJoin(code.value)))}
      />
      {error.value && (
        <p class="error" role="alert" data-testid="add-server-error">
          {error.value}
        </p>
      )}
    </Dialog>
  );
}
