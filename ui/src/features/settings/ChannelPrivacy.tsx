import { useSignal } from "@preact/signals";
import { useEffect } from "preact/hooks";
import { commands, events, type MemberPrivacy, type PrivacyStatus } from "../../lib/bindings";
import { Dialog } from "../layout/Dialog";

type Member = { user_id: string; display_name: string };

/** Whose media I can decrypt, in words. */
function keyState(sfu: boolean, m: MemberPrivacy | undefined): { ok: boolean; text: string } {
  if (m?.key_refused) return { ok: false, text: `Their key was refused: ${m.key_refused}` };
  if (m?.key_epoch != null) return { ok: true, text: `Encrypted (key ${m.key_epoch})` };
  return sfu
    ? { ok: false, text: "No key: not encrypted (no E2EE on their side, or not arrived yet). You do not hear them." }
    : { ok: false, text: "No key yet (this mesh channel is end to end anyway)." };
}

/**
 * The stage header's privacy badges for my channel: a lock when I joined with end-to-end
 * encryption (a click opens the safety numbers) and "IP hidden" when my media goes through TURN
 * only. Refetched on every change of the key exchange or a route (event `privacy-changed`).
 */
export function ChannelPrivacy(props: { channel: number; sfu: boolean; roster: Member[]; myId: string | null }) {
  const status = useSignal<PrivacyStatus | null>(null);
  const open = useSignal(false);

  function refresh() {
    commands
      .privacyStatus()
      .then((s) => (status.value = s))
      .catch(() => {});
  }
  useEffect(() => {
    refresh();
    let unlisten: (() => void) | undefined;
    let closed = false;
    events.privacyChanged
      .listen(refresh)
      .then((u) => (closed ? u() : (unlisten = u)))
      .catch(() => {});
    return () => {
      closed = true;
      unlisten?.();
    };
  }, [props.channel]);

  const s = status.value;
  if (!s || s.channel !== props.channel) return null;
  const others = props.roster.filter((m) => m.user_id !== props.myId);
  const byId = new Map(s.members.map((m) => [m.user_id, m]));
  const keyed = others.filter((m) => byId.get(m.user_id)?.key_epoch != null).length;
  const relayed = others.filter((m) => byId.get(m.user_id)?.relayed === true).length;
  return (
    <>
      {s.e2ee && (
        <button
          class="mode-badge e2ee"
          data-testid="stage-e2ee"
          data-keys={keyed}
          data-members={others.length}
          title={
            props.sfu
              ? `End-to-end encrypted: the relay's SFU forwards audio it cannot decrypt. Keys from ${keyed} of ${others.length}. Click for safety numbers.`
              : "End-to-end: a mesh channel is encrypted between members directly. Click for safety numbers."
          }
          onClick={() => {
            refresh();
            open.value = true;
          }}
        >
          🔒 E2EE {keyed}/{others.length}
        </button>
      )}
      {s.hide_ip && (
        <span
          class="mode-badge relayed"
          data-testid="stage-hide-ip"
          data-relayed={relayed}
          title="Hide my IP: your media goes through the relay's TURN server only (a little more latency); nobody in the channel sees your address."
        >
          IP hidden
        </span>
      )}
      {open.value && (
        <Dialog title="End-to-end encryption" testId="safety-dialog" onClose={() => (open.value = false)}>
          <p class="muted">
            Compare your safety number with each member (read it aloud, or compare screens). The same number on both
            sides means the keys are theirs and the relay did not put anyone in the middle.
          </p>
          <p class="muted" data-testid="e2ee-frames" data-decrypted={s.decrypted_frames} data-refused={s.refused_frames}>
            My key: {s.epoch ?? "none"} · frames decrypted {s.decrypted_frames}, refused {s.refused_frames}{" "}
            <button class="small secondary" data-testid="e2ee-refresh" onClick={refresh}>
              Refresh
            </button>
          </p>
          <ul class="safety-list">
            {others.map((m) => {
              const p = byId.get(m.user_id);
              const k = keyState(props.sfu, p);
              return (
                <li key={m.user_id} data-testid={`safety-${m.display_name}`} data-key={p?.key_epoch ?? ""}>
                  <strong>{m.display_name}</strong>{" "}
                  <span class={k.ok ? "muted" : "warning"} data-testid={`safety-state-${m.display_name}`}>
                    {k.text}
                  </span>
                  <SafetyNumber userId={m.user_id} known={p?.safety_number ?? null} name={m.display_name} />
                </li>
              );
            })}
          </ul>
        </Dialog>
      )}
    </>
  );
}

/** The 60 digits, in 12 groups of 5 (asked for when the status does not carry them). */
function SafetyNumber(props: { userId: string; known: string | null; name: string }) {
  const n = useSignal<string | null>(props.known);
  useEffect(() => {
    if (props.known) {
      n.value = props.known;
      return;
    }
    commands
      .safetyNumber(props.userId)
      .then((r) => (n.value = r.status === "ok" ? r.data : null))
      .catch(() => {});
  }, [props.userId, props.known]);
  return (
    <code class="safety-number" data-testid={`safety-number-${props.name}`}>
      {n.value ?? "…"}
    </code>
  );
}
