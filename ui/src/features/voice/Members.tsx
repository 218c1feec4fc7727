import { useSignal } from "@preact/signals";
import { useEffect } from "preact/hooks";
import { commands, events, type BanView, type MemberView, type ServerView } from "../../lib/bindings";
import { messageOf, unwrap } from "../../lib/api";

const RANK: Record<string, number> = { member: 0, admin: 1, owner: 2 };

type Pending = { user: string; action: "kick" | "ban" };

/**
 * A server's members (owner, admins, members; online first) and, for those allowed, what they
 * may do to them: the owner makes members admins and back; admins kick or ban members, the
 * owner anyone. Kick and ban ask once more before they act. Admins and the owner also see who is
 * banned, and unban them (they can then rejoin with an invite). The relay decides; a refusal
 * shows here.
 */
export function Members(props: { server: ServerView }) {
  const s = props.server;
  const members = useSignal<MemberView[] | null>(null);
  const error = useSignal<string | null>(null);
  const notice = useSignal<string | null>(null);
  const pending = useSignal<Pending | null>(null);
  const busy = useSignal(false);
  const bans = useSignal<BanView[] | null>(null);
  const mine = RANK[s.role] ?? 0;
  const admin = mine >= RANK.admin;

  async function load() {
    try {
      // Both at once, shown together (a ban moves someone from one list to the other).
      const [list, banned] = await Promise.all([
        unwrap(commands.serverMembers(s.id)),
        admin ? unwrap(commands.serverBans(s.id)) : Promise.resolve(null),
      ]);
      members.value = list;
      bans.value = banned;
    } catch (e) {
      error.value = messageOf(e);
    }
  }
  useEffect(() => {
    void load();
    // Live: someone joins, leaves or changes role while the list is open (coalesced: a burst of
    // joins is one reload).
    let timer: ReturnType<typeof setTimeout> | undefined;
    let closed = false;
    let unlisten: (() => void) | null = null;
    events.membersChanged
      .listen((e) => {
        if (e.payload.server !== s.id) return;
        clearTimeout(timer);
        timer = setTimeout(() => void load(), 100);
      })
      .then((u) => (closed ? u() : (unlisten = u)))
      .catch(() => {});
    return () => {
      closed = true;
      clearTimeout(timer);
      unlisten?.();
    };
  }, [s.id]);

  async function act(f: () => Promise<unknown>, done: string) {
    busy.value = true;
    error.value = null;
    notice.value = null;
    try {
      await f();
      notice.value = done;
      pending.value = null;
      await load();
    } catch (e) {
      error.value = messageOf(e);
    } finally {
      busy.value = false;
    }
  }

  const list = members.value;
  return (
    <div class="members" data-testid={`members-${s.name}`}>
      {list === null && !error.value && <p class="muted">Loading members…</p>}
      {list && (
        <p class="muted small-text" data-testid="members-count">
          {list.length} {list.length === 1 ? "member" : "members"}, {list.filter((m) => m.online).length} online
        </p>
      )}
      <ul class="member-list">
        {list?.map((m) => {
          // Admins act on members, the owner on everyone else (and nobody on themselves: the
          // same rank).
          const canRemove = RANK[m.role] < mine && mine >= RANK.admin;
          const canRole = s.role === "owner" && m.role !== "owner";
          const asking = pending.value?.user === m.user_id ? pending.value.action : null;
          return (
            <li key={m.user_id} class="member-row" data-testid={`member-row-${m.display_name}`} data-role={m.role}>
              <span class={`presence-dot ${m.online ? "online" : ""}`} title={m.online ? "Online" : "Offline"} />
              <span class="member-name" title={m.user_id}>
                {m.display_name}
              </span>
              {m.role !== "member" && <span class={`role-badge ${m.role}`}>{m.role}</span>}
              <span class="member-actions">
                {canRole && !asking && (
                  <button
                    class="secondary small"
                    data-testid={`member-role-${m.display_name}`}
                    disabled={busy.value}
                    onClick={() =>
                      act(
                        () => unwrap(commands.memberRoleSet(s.id, m.user_id, m.role !== "admin")),
                        m.role === "admin" ? `${m.display_name} is a member again.` : `${m.display_name} is now an admin.`,
                      )
                    }
                  >
                    {m.role === "admin" ? "Make member" : "Make admin"}
                  </button>
                )}
                {canRemove && !asking && (
                  <>
                    <button
                      class="secondary small"
                      data-testid={`member-kick-${m.display_name}`}
                      disabled={busy.value}
                      onClick={() => (pending.value = { user: m.user_id, action: "kick" })}
                    >
                      Kick
                    </button>
                    <button
                      class="danger small"
                      data-testid={`member-ban-${m.display_name}`}
                      disabled={busy.value}
                      onClick={() => (pending.value = { user: m.user_id, action: "ban" })}
                    >
                      Ban
                    </button>
                  </>
                )}
                {asking && (
                  <>
                    <span class="small-text">
                      {asking === "ban" ? "Ban: they cannot rejoin." : "Kick: they can rejoin with an invite."}
                    </span>
                    <button
                      class="danger small"
                      data-testid={`member-confirm-${m.display_name}`}
                      disabled={busy.value}
                      onClick={() =>
                        act(
                          () => unwrap(commands.memberRemove(s.id, m.user_id, asking === "ban")),
                          asking === "ban" ? `${m.display_name} is banned.` : `${m.display_name} was removed.`,
                        )
                      }
                    >
                      {asking === "ban" ? "Ban" : "Kick"} {m.display_name}
                    </button>
                    <button class="ghost small" data-testid="member-cancel" onClick={() => (pending.value = null)}>
                      Cancel
                    </button>
                  </>
                )}
              </span>
            </li>
          );
        })}
      </ul>
      {admin && (
        <section class="bans" data-testid="bans">
          <p class="side-label">Banned{bans.value && bans.value.length > 0 ? ` (${bans.value.length})` : ""}</p>
          {bans.value?.length === 0 && (
            <p class="muted small-text" data-testid="bans-empty">
              Nobody is banned.
            </p>
          )}
          <ul class="ban-list">
            {bans.value?.map((b) => (
              <li key={b.user_id} class="member-row" data-testid={`ban-row-${b.display_name}`}>
                <span class="member-name" title={b.user_id}>
                  {b.display_name}
                </span>
                <span class="member-actions">
                  <button
                    class="secondary small"
                    data-testid={`member-unban-${b.display_name}`}
                    disabled={busy.value}
                    onClick={() =>
                      act(() => unwrap(commands.memberUnban(s.id, b.user_id)), `${b.display_name} is no longer banned: they can rejoin with an invite.`)
                    }
                  >
                    Unban
                  </button>
                </span>
              </li>
            ))}
          </ul>
        </section>
      )}
      {notice.value && (
        <p class="muted small-text" role="status" data-testid="members-notice">
          {notice.value}
        </p>
      )}
      {error.value && (
        <p class="error" role="alert" data-testid="members-error">
          {error.value}
        </p>
      )}
    </div>
  );
}
