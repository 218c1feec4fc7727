import { useSignal } from "@preact/signals";
import { useEffect } from "preact/hooks";
import { commands, events, type LinkView } from "../../lib/bindings";
import { messageOf, unwrap } from "../../lib/api";
import { Dialog } from "../layout/Dialog";
import { selectedServer } from "../voice/store";

/**
 * `hum://` links the desktop opened (clicked in a browser or chat, or given to `hum-app` on the
 * command line): each is shown here and acted on only when the user confirms it.
 */
export function LinkPrompt(props: { onJoined?: () => void }) {
  const queue = useSignal<LinkView[]>([]);
  const busy = useSignal(false);
  const error = useSignal<string | null>(null);

  async function take() {
    try {
      const links = await commands.linksTake();
      if (links.length > 0) {
        const seen = new Set(queue.value.map((l) => l.link));
        queue.value = [...queue.value, ...links.filter((l) => !seen.has(l.link))];
      }
    } catch {
      // the inbox is local: nothing to show if it cannot be read
    }
  }
  useEffect(() => {
    take();
    let unlisten: (() => void) | undefined;
    events.linkOpened.listen(() => take()).then((u) => (unlisten = u)).catch(() => {});
    return () => unlisten?.();
  }, []);

  const link = queue.value[0];
  if (!link) return null;
  const next = () => {
    error.value = null;
    queue.value = queue.value.slice(1);
  };
  async function accept() {
    busy.value = true;
    error.value = null;
    try {
      if (link.kind === "invite") {
        // Shown at once: the app watches only the server on screen, so it would not hear of the
        // join otherwise (docs/app.md "Big servers").
        selectedServer.value = (await unwrap(commands.inviteJoin(link.code))).id;
        props.onJoined?.();
      } else {
        await unwrap(commands.friendRequest(link.link));
      }
      next();
    } catch (e) {
      error.value = messageOf(e);
    } finally {
      busy.value = false;
    }
  }
  const invite = link.kind === "invite";
  return (
    <Dialog title={invite ? "Join a server" : "Add a friend"} testId="link-dialog" onClose={next}>
      <p data-testid="link-what">
        {invite ? (
          <>
            You opened an invite link. Join the server behind invite <code>{link.code}</code>?
          </>
        ) : (
          <>
            You opened a friend link. Send a friend request to <code class="key">{link.who}</code>?
          </>
        )}
      </p>
      <p class="muted small-text">{link.link}</p>
      {error.value && (
        <p class="error" role="alert" data-testid="link-error">
          {error.value}
        </p>
      )}
      <div class="row">
        <button data-testid="link-accept" disabled={busy.value} onClick={accept}>
          {invite ? "Join server" : "Send request"}
        </button>
        <button class="secondary" data-testid="link-dismiss" onClick={next}>
          Not now
        </button>
      </div>
    </Dialog>
  );
}
