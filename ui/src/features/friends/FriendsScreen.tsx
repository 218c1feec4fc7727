import { useSignal } from "@preact/signals";
import { useEffect } from "preact/hooks";
import { commands, events, type FriendsView } from "../../lib/bindings";
import { messageOf, unwrap } from "../../lib/api";
import { currentCall, startCall } from "../calls/CallPanel";
import { PhoneIcon } from "../voice/icons";
import { TextSubmitRow } from "../shared/TextSubmitRow";

/** Friends with presence; add by public key; accept or decline requests. */
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
      <section class="card">
        <h2>Add a friend</h2>
        <TextSubmitRow
          field={key}
          placeholder="Their public key (64 hex characters)"
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
