import { useSignal } from "@preact/signals";
import { commands, type ServerView } from "../../lib/bindings";
import { messageOf, unwrap } from "../../lib/api";
import { refreshVoice, selectedServer } from "./store";

/** The longest server name the relay takes (hum-proto's `Name`), in characters. */
export const SERVER_NAME_MAX = 64;

/** Why `name` cannot be a server's name (null: it can; the relay checks the rest). */
export function serverNameProblem(name: string): string | null {
  const n = name.trim();
  if (!n) return "A server needs a name.";
  if ([...n].length > SERVER_NAME_MAX) return `A server name is at most ${SERVER_NAME_MAX} characters.`;
  return null;
}

/**
 * A server's settings: admins and the owner rename it; the owner deletes it (for everyone, after
 * typing its name); anyone else leaves it (after a second click). The relay decides; a refusal
 * shows here. After a delete or a leave the dialog closes and the server list is refetched.
 */
export function ServerSettings(props: { server: ServerView; onClose: () => void }) {
  const s = props.server;
  const name = useSignal(s.name);
  const error = useSignal<string | null>(null);
  const notice = useSignal<string | null>(null);
  const busy = useSignal(false);
  const confirming = useSignal(false);
  const typed = useSignal("");
  const owner = s.role === "owner";
  const admin = owner || s.role === "admin";

  async function act(f: () => Promise<unknown>, done: string | null) {
    busy.value = true;
    error.value = null;
    notice.value = null;
    try {
      await f();
      if (done === null) {
        // Gone from my list: show whichever server comes first.
        props.onClose();
        if (selectedServer.value === s.id) selectedServer.value = null;
      } else notice.value = done;
      await refreshVoice();
    } catch (e) {
      error.value = messageOf(e);
    } finally {
      busy.value = false;
    }
  }

  function rename(e: Event) {
    e.preventDefault();
    const problem = serverNameProblem(name.value);
    if (problem) {
      error.value = problem;
      notice.value = null;
      return;
    }
    const next = name.value.trim();
    void act(() => unwrap(commands.serverRename(s.id, next)), `Renamed to ${next}.`);
  }

  const channels = s.channels.length;
  return (
    <div class="server-settings" data-testid={`server-settings-${s.name}`}>
      {admin && (
        <form class="settings-section" onSubmit={rename}>
          <h3>Name</h3>
          <div class="row">
            <input
              data-testid="server-rename-input"
              aria-label="Server name"
              value={name.value}
              maxLength={SERVER_NAME_MAX * 2}
              onInput={(e) => (name.value = e.currentTarget.value)}
            />
            <button type="submit" data-testid="server-rename-save" disabled={busy.value || name.value.trim() === s.name}>
              Rename
            </button>
          </div>
          <p class="muted small-text">Everyone in the server sees the new name.</p>
        </form>
      )}
      {owner ? (
        <section class="settings-section danger-zone">
          <h3>Delete this server</h3>
          <p class="muted small-text" data-testid="server-delete-warning">
            Deleting {s.name} deletes its {channels} voice {channels === 1 ? "channel" : "channels"} and removes every member, for
            everyone. Anyone in a channel is taken out. It cannot be undone.
          </p>
          {!confirming.value ? (
            <button class="danger" data-testid="server-delete" disabled={busy.value} onClick={() => (confirming.value = true)}>
              Delete server…
            </button>
          ) : (
            <form
              class="row"
              onSubmit={(e) => {
                e.preventDefault();
                if (typed.value.trim() === s.name) void act(() => unwrap(commands.serverDelete(s.id)), null);
              }}
            >
              <input
                data-testid="server-delete-confirm-input"
                aria-label="Type the server's name to confirm"
                placeholder={`Type ${s.name} to confirm`}
                value={typed.value}
                onInput={(e) => (typed.value = e.currentTarget.value)}
              />
              <button type="submit" class="danger" data-testid="server-delete-confirm" disabled={busy.value || typed.value.trim() !== s.name}>
                Delete {s.name} for everyone
              </button>
              <button
                type="button"
                class="ghost"
                data-testid="server-delete-cancel"
                onClick={() => {
                  confirming.value = false;
                  typed.value = "";
                }}
              >
                Cancel
              </button>
            </form>
          )}
        </section>
      ) : (
        <section class="settings-section">
          <h3>Leave this server</h3>
          {!confirming.value ? (
            <button class="danger" data-testid="server-leave" disabled={busy.value} onClick={() => (confirming.value = true)}>
              Leave server
            </button>
          ) : (
            <div class="row">
              <span class="small-text" data-testid="server-leave-warning">
                Leave {s.name}? Coming back takes a new invite.
              </span>
              <button
                class="danger"
                data-testid="server-leave-confirm"
                disabled={busy.value}
                onClick={() => act(() => unwrap(commands.serverLeave(s.id)), null)}
              >
                Leave {s.name}
              </button>
              <button class="ghost" data-testid="server-leave-cancel" onClick={() => (confirming.value = false)}>
                Cancel
              </button>
            </div>
          )}
        </section>
      )}
      {notice.value && (
        <p class="muted small-text" role="status" data-testid="server-settings-notice">
          {notice.value}
        </p>
      )}
      {error.value && (
        <p class="error" role="alert" data-testid="server-settings-error">
          {error.value}
        </p>
      )}
    </div>
  );
}
