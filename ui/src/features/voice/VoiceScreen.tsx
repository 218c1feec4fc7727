import { useSignal } from "@preact/signals";
import { useEffect } from "preact/hooks";
import { commands, events, type MyVoice, type ServerView } from "../../lib/bindings";
import { messageOf, unwrap } from "../../lib/api";

/** Servers, their voice channels and who is in each (with live speaking / muted indicators). */
export function VoiceScreen() {
  const servers = useSignal<ServerView[] | null>(null);
  const me = useSignal<MyVoice>({ channel: null, muted: false, deafened: false });
  const error = useSignal<string | null>(null);
  const newServer = useSignal("");
  const newChannel = useSignal<Record<number, string>>({});
  const newChannelMax = useSignal<Record<number, string>>({});

  async function refresh() {
    try {
      servers.value = await unwrap(commands.serversList());
      me.value = await unwrap(commands.myVoice());
      error.value = null;
    } catch (e) {
      error.value = messageOf(e);
    }
  }

  useEffect(() => {
    refresh();
    // The backend nudges on every roster/channel change; coalesce bursts (speaking toggles).
    let timer: ReturnType<typeof setTimeout> | undefined;
    const unlisten: (() => void)[] = [];
    const soon = () => {
      clearTimeout(timer);
      timer = setTimeout(refresh, 50);
    };
    events.serversChanged.listen(soon).then((u) => unlisten.push(u)).catch(() => {});
    return () => {
      clearTimeout(timer);
      unlisten.forEach((u) => u());
    };
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

  const list = servers.value;
  return (
    <div data-testid="voice-screen">
      <section class="card">
        <div class="row">
          <h2 style={{ flex: 1 }}>Voice</h2>
          <button
            data-testid="mute"
            class={me.value.muted ? "toggle on" : "toggle"}
            onClick={() => act(async () => (me.value = await unwrap(commands.voiceStateSet(!me.value.muted, me.value.deafened))))}
          >
            {me.value.muted ? "Unmute" : "Mute"}
          </button>
          <button
            data-testid="deafen"
            class={me.value.deafened ? "toggle on" : "toggle"}
            onClick={() => act(async () => (me.value = await unwrap(commands.voiceStateSet(me.value.muted, !me.value.deafened))))}
          >
            {me.value.deafened ? "Undeafen" : "Deafen"}
          </button>
        </div>
        {error.value && (
          <p class="error" role="alert" data-testid="voice-error">
            {error.value}
          </p>
        )}
        <form
          class="row"
          onSubmit={(e) => {
            e.preventDefault();
            act(async () => {
              await unwrap(commands.serverCreate(newServer.value));
              newServer.value = "";
            });
          }}
        >
          <input
            placeholder="New server name"
            data-testid="new-server-name"
            value={newServer.value}
            onInput={(e) => (newServer.value = e.currentTarget.value)}
          />
          <button type="submit" data-testid="create-server">
            Create server
          </button>
        </form>
      </section>
      {list === null && !error.value && <p class="muted">Loading servers…</p>}
      {list?.length === 0 && <p class="muted">No servers yet: create one above.</p>}
      {list?.map((s) => (
        <section class="card" key={s.id} data-testid={`server-${s.name}`}>
          <h3>{s.name}</h3>
          {s.channels.map((c) => {
            const here = me.value.channel === c.id;
            return (
              <div class={`channel ${here ? "here" : ""}`} key={c.id} data-testid={`channel-${c.name}`}>
                <div class="row">
                  <span class="channel-name">🔊 {c.name}</span>
                  <span class="muted">
                    {c.roster.length}/{c.max_participants}
                  </span>
                  {here ? (
                    <button data-testid={`leave-${c.name}`} onClick={() => act(() => unwrap(commands.channelLeave()))}>
                      Leave
                    </button>
                  ) : (
                    <button data-testid={`join-${c.name}`} onClick={() => act(() => unwrap(commands.channelJoin(c.id)))}>
                      Join
                    </button>
                  )}
                </div>
                <ul class="roster">
                  {c.roster.map((m) => (
                    <li
                      key={m.user_id}
                      data-testid={`member-${m.display_name}`}
                      data-speaking={m.speaking ? "true" : "false"}
                      class={m.speaking ? "member speaking" : "member"}
                    >
                      <span class={`avatar ${m.speaking ? "speaking-ring" : ""}`}>
                        {m.display_name.slice(0, 1).toUpperCase()}
                      </span>
                      {m.display_name}
                      {m.muted && <span class="badge" title="Muted">muted</span>}
                      {m.deafened && <span class="badge" title="Deafened">deafened</span>}
                    </li>
                  ))}
                </ul>
              </div>
            );
          })}
          {s.role !== "member" && (
            <form
              class="row"
              onSubmit={(e) => {
                e.preventDefault();
                const max = Number.parseInt(newChannelMax.value[s.id] ?? "", 10);
                act(async () => {
                  await unwrap(
                    commands.channelCreate(s.id, newChannel.value[s.id] ?? "", Number.isFinite(max) ? max : null),
                  );
                  newChannel.value = { ...newChannel.value, [s.id]: "" };
                });
              }}
            >
              <input
                placeholder="New voice channel"
                data-testid={`new-channel-name-${s.name}`}
                value={newChannel.value[s.id] ?? ""}
                onInput={(e) => (newChannel.value = { ...newChannel.value, [s.id]: e.currentTarget.value })}
              />
              <input
                type="number"
                min="1"
                placeholder="Max"
                title="Max participants"
                data-testid={`new-channel-max-${s.name}`}
                value={newChannelMax.value[s.id] ?? ""}
                onInput={(e) => (newChannelMax.value = { ...newChannelMax.value, [s.id]: e.currentTarget.value })}
              />
              <button type="submit" data-testid={`create-channel-${s.name}`}>
                Add channel
              </button>
            </form>
          )}
        </section>
      ))}
    </div>
  );
}
