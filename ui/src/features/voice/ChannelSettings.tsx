import { useSignal } from "@preact/signals";
import { commands, type ChannelPermissionsView, type ChannelView, type RolePermissions } from "../../lib/bindings";
import { messageOf, unwrap } from "../../lib/api";
import { refreshVoice } from "./store";

const RIGHTS: { key: keyof RolePermissions; label: string; hint: string }[] = [
  { key: "join", label: "Join", hint: "enter the channel" },
  { key: "speak", label: "Speak", hint: "without it they stay muted" },
  { key: "video", label: "Video", hint: "camera" },
  { key: "stream", label: "Stream", hint: "screen share / livestream" },
];
const ROLES: { key: keyof ChannelPermissionsView; label: string }[] = [
  { key: "member", label: "Members" },
  { key: "admin", label: "Admins" },
];

/** The mesh limits an admin may pick ("" is the relay's own). */
const MESH_LIMITS: { value: string; label: string }[] = [
  { value: "", label: "Relay default" },
  { value: "0", label: "Always on the server (SFU)" },
  ...[2, 3, 4, 5, 6, 7].map((n) => ({ value: String(n), label: `Past ${n} people` })),
];

/**
 * An admin's editor for one channel: participant limit, when it moves from a direct mesh to the
 * relay's SFU, and what members and admins may do (the owner may always do everything). The backend checks it (and the relay refuses what it must);
 * either refusal shows here. Changes apply at once to whoever is inside.
 */
export function ChannelSettings(props: { channel: ChannelView; onClose: () => void }) {
  const c = props.channel;
  const max = useSignal(String(c.max_participants));
  const perms = useSignal<ChannelPermissionsView>(c.permissions);
  const meshLimit = useSignal(c.mesh_limit === null ? "" : String(c.mesh_limit));
  const error = useSignal<string | null>(null);
  const saving = useSignal(false);

  function toggle(role: keyof ChannelPermissionsView, right: keyof RolePermissions, on: boolean) {
    perms.value = { ...perms.value, [role]: { ...perms.value[role], [right]: on } };
    error.value = null;
  }

  async function save(e: Event) {
    e.preventDefault();
    const n = Number.parseInt(max.value, 10);
    if (!Number.isFinite(n)) {
      error.value = "Max participants must be a whole number.";
      return;
    }
    saving.value = true;
    try {
      const limit = meshLimit.value === "" ? null : Number.parseInt(meshLimit.value, 10);
      await unwrap(commands.channelConfigure(c.id, n, perms.value, limit));
      // The list shows what was saved as the dialog closes (opening it again at once must not
      // show the old settings while the relay's channel_updated is on its way).
      await refreshVoice();
      props.onClose();
    } catch (err) {
      error.value = messageOf(err);
    } finally {
      saving.value = false;
    }
  }

  return (
    <form class="channel-settings" data-testid={`channel-settings-${c.name}`} onSubmit={save} noValidate>
      <label class="inline">
        Max participants
        <input
          type="number"
          min="1"
          max="1000"
          data-testid="perm-max"
          value={max.value}
          onInput={(e) => {
            max.value = e.currentTarget.value;
            error.value = null;
          }}
        />
      </label>
      <label class="inline" title="In a mesh everyone sends to everyone; on the server (SFU) everyone sends once">
        Move to the server
        <select
          data-testid="perm-mesh-limit"
          value={meshLimit.value}
          onChange={(e) => {
            meshLimit.value = e.currentTarget.value;
            error.value = null;
          }}
        >
          {MESH_LIMITS.some((o) => o.value === meshLimit.value) ? null : (
            <option value={meshLimit.value}>Past {meshLimit.value} people</option>
          )}
          {MESH_LIMITS.map((o) => (
            <option key={o.value} value={o.value}>
              {o.label}
            </option>
          ))}
        </select>
      </label>
      <table class="perm-table">
        <thead>
          <tr>
            <th />
            {RIGHTS.map((r) => (
              <th key={r.key} title={r.hint}>
                {r.label}
              </th>
            ))}
          </tr>
        </thead>
        <tbody>
          {ROLES.map((role) => (
            <tr key={role.key}>
              <th scope="row">{role.label}</th>
              {RIGHTS.map((r) => (
                <td key={r.key}>
                  <input
                    type="checkbox"
                    aria-label={`${role.label}: ${r.label}`}
                    data-testid={`perm-${role.key}-${r.key}`}
                    checked={perms.value[role.key][r.key]}
                    onChange={(e) => toggle(role.key, r.key, e.currentTarget.checked)}
                  />
                </td>
              ))}
            </tr>
          ))}
        </tbody>
      </table>
      <p class="muted">The owner may always do everything. Changes apply at once to whoever is in the channel.</p>
      {error.value && (
        <p class="error" role="alert" data-testid="perm-error">
          {error.value}
        </p>
      )}
      <div class="actions">
        <button type="submit" data-testid="perm-save" disabled={saving.value}>
          Save
        </button>
        <button type="button" class="secondary" data-testid="perm-cancel" onClick={props.onClose}>
          Cancel
        </button>
      </div>
    </form>
  );
}
