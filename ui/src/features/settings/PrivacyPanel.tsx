import { useSignal } from "@preact/signals";
import { useEffect } from "preact/hooks";
import { commands, type PrivacySettings } from "../../lib/bindings";
import { messageOf, unwrap } from "../../lib/api";

/**
 * Settings → Privacy: "Hide my IP" (media through the relay's TURN server only) and end-to-end
 * encryption on the SFU. Both persist and apply from the next channel join or call; each says
 * what it costs.
 */
export function PrivacyPanel() {
  const p = useSignal<PrivacySettings | null>(null);
  const status = useSignal<string | null>(null);
  const error = useSignal<string | null>(null);

  useEffect(() => {
    commands
      .privacyGet()
      .then((v) => (p.value = v))
      .catch((e) => (error.value = messageOf(e)));
  }, []);

  async function apply(next: PrivacySettings) {
    p.value = next;
    status.value = null;
    error.value = null;
    try {
      p.value = await unwrap(commands.privacySet(next));
      status.value = "Saved. Applies from your next call or channel join.";
    } catch (e) {
      error.value = messageOf(e);
    }
  }

  const s = p.value;
  return (
    <section class="card" data-testid="privacy-panel">
      <h2>Privacy</h2>
      {!s ? (
        error.value ? null : <p class="muted">Loading…</p>
      ) : (
        <>
          <label class="inline">
            <input
              type="checkbox"
              data-testid="privacy-hide-ip"
              checked={s.hide_ip}
              onChange={(e) => apply({ ...s, hide_ip: e.currentTarget.checked })}
            />
            Hide my IP address
          </label>
          <p class="muted" data-testid="privacy-hide-ip-cost">
            Calls and voice channels send your audio and video only through the relay's TURN server, so the
            people you talk to and the SFU never see your address. It costs latency: every packet takes a detour
            through that server (typically 10–50 ms more round trip). Needs a relay that offers a TURN server.
          </p>
          <label class="inline">
            <input
              type="checkbox"
              data-testid="privacy-e2ee"
              checked={s.e2ee}
              onChange={(e) => apply({ ...s, e2ee: e.currentTarget.checked })}
            />
            End-to-end encryption in big channels
          </label>
          <p class="muted" data-testid="privacy-e2ee-cost">
            When a channel runs on the relay's SFU, your audio is encrypted for the other members only: the relay
            cannot listen. Small channels and calls are always end to end. Members without it cannot hear you
            there, and you do not hear them. Compare safety numbers (click the lock in the channel) to know nobody
            is in the middle.
          </p>
        </>
      )}
      {status.value && (
        <p class="muted" data-testid="privacy-status">
          {status.value}
        </p>
      )}
      {error.value && (
        <p class="error" role="alert" data-testid="privacy-error">
          {error.value}
        </p>
      )}
    </section>
  );
}
