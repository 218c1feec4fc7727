import { useSignal } from "@preact/signals";
import { commands, type IdentityInfo } from "../../lib/bindings";
import { messageOf, unwrap } from "../../lib/api";

/** First run: pick a display name and a relay; creates the Ed25519 identity. */
export function FirstRun(props: { defaultRelay: string; onDone: (id: IdentityInfo) => void }) {
  const name = useSignal("");
  const relay = useSignal(props.defaultRelay);
  const error = useSignal<string | null>(null);
  const busy = useSignal(false);

  async function submit(e: Event) {
    e.preventDefault();
    busy.value = true;
    error.value = null;
    try {
      await unwrap(commands.relayUrlSet(relay.value));
      const id = await unwrap(commands.identityCreate(name.value));
      props.onDone(id);
    } catch (err) {
      error.value = messageOf(err);
    } finally {
      busy.value = false;
    }
  }

  return (
    <main class="first-run">
      <form class="card" onSubmit={submit} data-testid="first-run">
        <h1>Welcome to Hum</h1>
        <p class="muted">
          Hum creates a key pair on this computer. Your public key is how friends find you; the
          private key never leaves this machine.
        </p>
        <label>
          Display name
          <input
            name="display-name"
            data-testid="display-name"
            value={name.value}
            maxLength={32}
            autoFocus
            onInput={(e) => (name.value = e.currentTarget.value)}
          />
        </label>
        <label>
          Relay address
          <input
            name="relay-url"
            data-testid="relay-url"
            value={relay.value}
            onInput={(e) => (relay.value = e.currentTarget.value)}
          />
        </label>
        {error.value && (
          <p class="error" role="alert" data-testid="first-run-error">
            {error.value}
          </p>
        )}
        <button type="submit" disabled={busy.value} data-testid="create-identity">
          Create identity
        </button>
      </form>
    </main>
  );
}
