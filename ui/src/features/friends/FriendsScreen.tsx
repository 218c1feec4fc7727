import { useSignal } from "@preact/signals";
import { useEffect } from "preact/hooks";
import { commands, events, type FriendCard, type FriendsView } from "../../lib/bindings";
import { messageOf, unwrap } from "../../lib/api";
import { currentCall, startCall } from "../calls/CallPanel";
import { PhoneIcon } from "../voice/icons";
import { TextSubmitRow } from "../shared/TextSubmitRow";

/** Friends with presence; add by @handle, friend link or public key; accept or decline requests. */
export function FriendsScreen() {
  const data = useSignal<FriendsView | null>(null);
  const key = useSignal("");
  const error = useSignal<string | null>(null);

  async function refresh() {
    try {
      data.value = await unwrap(commands.friendsList());
    } catch (e) {
      error.value = messageOf(e);
    }
  }
  useEffect(() => {
    refresh();
    let unlisten: (() => void) | undefined;
    events.friendsChanged.listen(() => refresh()).then((u) => (unlisten = u)).catch(() => {});
    return () => unlisten?.();
  }, []);

  async function act(f: () => Promise<unknown>) {
    try {
      error.value = null;
      await f();
      await refresh();
    } catch (e) {
      error.value = messageOf(e);
    }
  }

  const d = data.value;
  return (
    <div data-testid="friends-screen">
      <MyCard />
      <section class="card">
        <h2>Add a friend</h2>
        <TextSubmitRow
          field={key}
          placeholder="@handle, hum://friend/ link or public key"
          inputTestId="friend-key"
          button="Send request"
          buttonTestId="friend-add"
          onSubmit={() =>
            act(async () => {
              await unwrap(commands.friendRequest(key.value));
              key.value = "";
            })
          }
        />
        {error.value && (
          <p class="error" role="alert" data-testid="friends-error">
            {error.value}
          </p>
        )}
      </section>
      {d && d.incoming.length > 0 && (
        <section class="card">
          <h3>Requests</h3>
          {d.incoming.map((p) => (
            <div class="row" key={p.user_id} data-testid={`incoming-${p.display_name}`}>
              <span style={{ flex: 1 }}>{p.display_name}</span>
              <button data-testid={`friend-accept-${p.display_name}`} onClick={() => act(() => unwrap(commands.friendRespond(p.user_id, true)))}>
                Accept
              </button>
              <button class="secondary" data-testid={`friend-decline-${p.display_name}`} onClick={() => act(() => unwrap(commands.friendRespond(p.user_id, false)))}>
                Decline
              </button>
            </div>
          ))}
        </section>
      )}
      <section class="card">
        <h3>Friends</h3>
        {d?.friends.length === 0 && <p class="muted">No friends yet.</p>}
        <ul class="roster">
          {d?.friends.map((f) => (
            <li key={f.user_id} class="member" data-testid={`friend-${f.display_name}`}>
              <span class={`dot ${f.online ? "online" : ""}`} />
              {f.display_name}
              <span class="muted">{f.in_call ? "in a call" : f.in_voice ? "in voice" : f.online ? "online" : "offline"}</span>
              <button
                class="call-button"
                data-testid={`call-${f.display_name}`}
                disabled={!f.online || currentCall.value.phase !== "idle"}
                title={f.online ? `Call ${f.display_name}` : `${f.display_name} is offline`}
                onClick={() => startCall(f.user_id)}
              >
                <PhoneIcon size={14} /> Call
              </button>
            </li>
          ))}
        </ul>
        {d && d.outgoing.length > 0 && (
          <p class="muted">Waiting for: {d.outgoing.map((p) => p.display_name).join(", ")}</p>
        )}
      </section>
    </div>
  );
}

/** How others find me: my handle on this relay (editable), my friend link to copy, my key. */
function MyCard() {
  const card = useSignal<FriendCard | null>(null);
  const handle = useSignal("");
  const status = useSignal<string | null>(null);
  const error = useSignal<string | null>(null);

  async function load() {
    try {
      const c = await unwrap(commands.friendCard());
      card.value = c;
      handle.value = c.handle ?? "";
    } catch (e) {
      error.value = messageOf(e);
    }
  }
  useEffect(() => {
    load();
  }, []);

  async function save() {
    error.value = null;
    status.value = null;
    try {
      const set = await unwrap(commands.handleSet(handle.value.trim() === "" ? null : handle.value));
      handle.value = set ?? "";
      if (card.value) card.value = { ...card.value, handle: set };
      status.value = set ? `Others can add you as ${set}.` : "Handle removed.";
    } catch (e) {
      error.value = messageOf(e);
    }
  }
  async function copy() {
    const link = card.value?.friend_link;
    if (!link) return;
    try {
      await navigator.clipboard.writeText(link);
      status.value = "Friend link copied.";
    } catch {
      // No clipboard permission in this webview: select the text so Ctrl+C copies it.
      const field = document.querySelector<HTMLInputElement>("[data-testid=friend-link]");
      field?.select();
      status.value = "Press Ctrl+C to copy the selected link.";
    }
  }

  const c = card.value;
  return (
    <section class="card" data-testid="my-card">
      <h2>You</h2>
      <TextSubmitRow
        field={handle}
        placeholder="@handle (unique on this relay)"
        inputTestId="my-handle"
        button="Save handle"
        buttonTestId="my-handle-save"
        onSubmit={save}
      />
      <div class="row">
        <input readOnly value={c?.friend_link ?? ""} data-testid="friend-link" aria-label="Your friend link" style={{ flex: 1 }} />
        <button class="secondary" data-testid="friend-link-copy" disabled={!c} onClick={copy}>
          Copy my friend link
        </button>
      </div>
      {c && (
        <p class="muted small-text">
          Your public key (what a friend link carries; compare it with a friend to be sure it is you):{" "}
          <code class="key" data-testid="my-key">{c.public_key}</code>
        </p>
      )}
      {status.value && <p class="muted" data-testid="my-card-status">{status.value}</p>}
      {error.value && (
        <p class="error" role="alert" data-testid="my-card-error">
          {error.value}
        </p>
      )}
    </section>
  );
}
