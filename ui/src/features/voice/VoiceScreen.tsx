import { useSignal } from "@preact/signals";
import { useEffect } from "preact/hooks";
import { commands, events, type MyVoice, type ServerView } from "../../lib/bindings";
import { messageOf, unwrap } from "../../lib/api";
import { describeStats, peerStats } from "../../lib/streams";
import { ChannelSettings } from "./ChannelSettings";
import { GearIcon, SpeakerIcon } from "./icons";
import { LevelMeter } from "./LevelMeter";
import { TextSubmitRow } from "../shared/TextSubmitRow";

/** Servers, their voice channels and who is in each (with live speaking / muted indicators). */
export function VoiceScreen() {
  const servers = useSignal<ServerView[] | null>(null);
  const me = useSignal<MyVoice>({ channel: null, muted: false, deafened: false, audio_notice: null });
  const error = useSignal<string | null>(null);
  const newServer = useSignal("");
  const newChannel = useSignal<Record<number, string>>({});
  const newChannelMax = useSignal<Record<number, string>>({});
  const invites = useSignal<Record<number, string>>({});
  const inviteCode = useSignal("");
  const notice = useSignal<string | null>(null);
  const selfSpeaking = useSignal(false);
  const editing = useSignal<number | null>(null);

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
    events.audioNotice
      .listen((e) => (notice.value = e.payload.message))
      .then((u) => unlisten.push(u))
      .catch(() => {});
    events.selfSpeaking
      .listen((e) => (selfSpeaking.value = e.payload.speaking))
      .then((u) => unlisten.push(u))
      .catch(() => {});
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
        {me.value.channel !== null && (
          <div class="self-voice">
            <p class="muted" data-testid="self-speaking">
              {selfSpeaking.value ? "You are speaking" : me.value.muted ? "You are muted" : "In voice"}
            </p>
            <LevelMeter thresholdDbfs={-45} compact />
          </div>
        )}
        {(notice.value || me.value.audio_notice) && (
          <p class="warning" data-testid="audio-notice">
            {notice.value ?? me.value.audio_notice}
          </p>
        )}
        {error.value && (
          <p class="error" role="alert" data-testid="voice-error">
            {error.value}
          </p>
        )}
        <TextSubmitRow
          field={newServer}
          placeholder="New server name"
          inputTestId="new-server-name"
          button="Create server"
          buttonTestId="create-server"
          onSubmit={() =>
            act(async () => {
              await unwrap(commands.serverCreate(newServer.value));
              newServer.value = "";
            })
          }
        />
        <TextSubmitRow
          field={inviteCode}
          placeholder="Invite code"
          inputTestId="invite-code-input"
          button="Join server"
          buttonTestId="invite-join"
          onSubmit={() =>
            act(async () => {
              await unwrap(commands.inviteJoin(inviteCode.value));
              inviteCode.value = "";
            })
          }
        />
      </section>
      {list === null && !error.value && <p class="muted">Loading servers…</p>}
      {list?.length === 0 && <p class="muted">No servers yet: create one above.</p>}
      {list?.map((s) => (
        <section class="card" key={s.id} data-testid={`server-${s.name}`}>
          <div class="row">
            <h3 style={{ flex: 1 }}>{s.name}</h3>
            {invites.value[s.id] && (
              <code class="key" data-testid={`invite-code-${s.name}`}>
                {invites.value[s.id]}
              </code>
            )}
            <button
              class="secondary"
              data-testid={`invite-${s.name}`}
              onClick={() =>
                act(async () => {
                  const code = await unwrap(commands.inviteCreate(s.id));
                  invites.value = { ...invites.value, [s.id]: code };
                })
              }
            >
              Invite
            </button>
          </div>
          {s.channels.map((c) => {
            const here = me.value.channel === c.id;
            return (
              <div class={`channel ${here ? "here" : ""}`} key={c.id} data-testid={`channel-${c.name}`}>
                <div class="row">
                  <span class="channel-name">
                    <SpeakerIcon /> {c.name}
                  </span>
                  <span class="muted">
                    {c.roster.length}/{c.max_participants}
                  </span>
                  {s.role !== "member" && (
                    <button
                      class="secondary icon-button"
                      title="Channel settings"
                      data-testid={`channel-edit-${c.name}`}
                      onClick={() => (editing.value = editing.value === c.id ? null : c.id)}
                    >
                      <GearIcon />
                    </button>
                  )}
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
                {editing.value === c.id && <ChannelSettings channel={c} onClose={() => (editing.value = null)} />}
                <ul class="roster">
                  {c.roster.map((m) => {
                    const st = peerStats.value[m.user_id];
                    return (
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
                      {here && st && (
                        <span
                          class={`quality-dot ${st.quality}`}
                          title={describeStats(st)}
                          data-testid={`quality-${m.display_name}`}
                          data-rtt={st.rtt_ms ?? ""}
                        />
                      )}
                      {m.muted && <span class="badge" title="Muted">muted</span>}
                      {m.deafened && <span class="badge" title="Deafened">deafened</span>}
                      {here && (
                        <input
                          type="range"
                          min="0"
                          max="200"
                          step="10"
                          defaultValue="100"
                          title={`Volume for ${m.display_name}`}
                          class="volume"
                          data-testid={`volume-${m.display_name}`}
                          onChange={(e) =>
                            act(() => unwrap(commands.userVolumeSet(m.user_id, Number(e.currentTarget.value))))
                          }
                        />
                      )}
                    </li>
                    );
                  })}
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
