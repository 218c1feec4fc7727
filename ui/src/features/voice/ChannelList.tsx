import { useSignal } from "@preact/signals";
import { commands, type ServerView } from "../../lib/bindings";
import { unwrap } from "../../lib/api";
import { describeStats, peerStats } from "../../lib/streams";
import { Dialog } from "../layout/Dialog";
import { ChannelSettings } from "./ChannelSettings";
import { Members } from "./Members";
import { ServerSettings } from "./ServerSettings";
import { ChannelStreams } from "../stream/ChannelStreams";
import { GearIcon, HeadphonesIcon, MicIcon, SpeakerIcon } from "./icons";
import { myVoice, voiceAct } from "./store";

/**
 * One server's voice channels, each with who sits in it (speaking ring, muted/deafened, link
 * quality while I am there), join/leave, the admin's channel settings (a dialog), an invite
 * dialog, the members (a dialog: roles, kick, ban, the ban list), the server's settings (a dialog:
 * rename, delete, leave) and, for admins, a form to add a channel.
 */
export function ChannelList(props: { server: ServerView }) {
  const s = props.server;
  const editing = useSignal<number | null>(null);
  const invite = useSignal<string | null>(null);
  const showMembers = useSignal(false);
  // The server whose settings are open (not a flag: if this server goes away while the dialog is
  // open, the next one shown does not inherit it).
  const settingsOf = useSignal<number | null>(null);
  const newChannel = useSignal("");
  const newMax = useSignal("");
  const me = myVoice.value;
  const edited = s.channels.find((c) => c.id === editing.value);
  return (
    <div class="channel-list" data-testid={`channels-${s.name}`}>
      <header class="side-head">
        <h2 title={s.name}>{s.name}</h2>
        <button
          class="secondary small"
          data-testid={`invite-${s.name}`}
          onClick={() =>
            voiceAct(async () => {
              invite.value = await unwrap(commands.inviteCreate(s.id));
            })
          }
        >
          Invite
        </button>
        <button class="secondary small" data-testid={`members-open-${s.name}`} onClick={() => (showMembers.value = true)}>
          Members
        </button>
        <button
          class="ghost icon-button"
          data-testid={`server-settings-open-${s.name}`}
          title="Server settings"
          aria-label="Server settings"
          onClick={() => (settingsOf.value = s.id)}
        >
          <GearIcon />
        </button>
      </header>
      <p class="side-label">Voice channels</p>
      {s.hidden ? (
        <p class="muted small-text" data-testid="channels-loading">
          Loading channels…
        </p>
      ) : (
        s.channels.length === 0 && <p class="muted small-text">No channels yet.</p>
      )}
      {s.channels.map((c) => {
        const here = me.channel === c.id;
        return (
          <div class={`channel ${here ? "here" : ""}`} key={c.id} data-testid={`channel-${c.name}`}>
            <div class="channel-row">
              <span class="channel-name">
                <SpeakerIcon /> {c.name}
              </span>
              {c.mode === "sfu" && (
                <span class="mode-badge sfu" data-testid={`channel-mode-${c.name}`} title="On the relay's SFU (a big channel)">
                  SFU
                </span>
              )}
              <span class="muted count">
                {c.roster.length}/{c.max_participants}
              </span>
              {s.role !== "member" && (
                <button
                  class="ghost icon-button"
                  title="Channel settings"
                  data-testid={`channel-edit-${c.name}`}
                  onClick={() => (editing.value = c.id)}
                >
                  <GearIcon />
                </button>
              )}
              {here ? (
                <button class="small danger" data-testid={`leave-${c.name}`} onClick={() => voiceAct(() => unwrap(commands.channelLeave()))}>
                  Leave
                </button>
              ) : (
                <button class="small" data-testid={`join-${c.name}`} onClick={() => voiceAct(() => unwrap(commands.channelJoin(c.id)))}>
                  Join
                </button>
              )}
            </div>
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
                    <span class={`avatar ${m.speaking ? "speaking-ring" : ""}`}>{m.display_name.slice(0, 1).toUpperCase()}</span>
                    <span class="member-name">{m.display_name}</span>
                    {here && st && (
                      <span
                        class={`quality-dot ${st.quality}`}
                        title={describeStats(st)}
                        data-testid={`quality-${m.display_name}`}
                        data-rtt={st.rtt_ms ?? ""}
                      />
                    )}
                    {m.muted && (
                      <span class="state-icon" title="Muted">
                        <MicIcon size={14} off />
                        <span class="sr-only">muted</span>
                      </span>
                    )}
                    {m.deafened && (
                      <span class="state-icon" title="Deafened">
                        <HeadphonesIcon size={14} off />
                        <span class="sr-only">deafened</span>
                      </span>
                    )}
                  </li>
                );
              })}
            </ul>
            <ChannelStreams server={s.id} channel={c.id} channelName={c.name} />
          </div>
        );
      })}
      {s.role !== "member" && (
        <form
          class="add-channel"
          onSubmit={(e) => {
            e.preventDefault();
            const max = Number.parseInt(newMax.value, 10);
            voiceAct(async () => {
              await unwrap(commands.channelCreate(s.id, newChannel.value, Number.isFinite(max) ? max : null));
              newChannel.value = "";
              newMax.value = "";
            });
          }}
        >
          <input
            placeholder="New voice channel"
            data-testid={`new-channel-name-${s.name}`}
            value={newChannel.value}
            onInput={(e) => (newChannel.value = e.currentTarget.value)}
          />
          <div class="row">
            <input
              type="number"
              min="1"
              placeholder="Max"
              title="Max participants"
              data-testid={`new-channel-max-${s.name}`}
              value={newMax.value}
              onInput={(e) => (newMax.value = e.currentTarget.value)}
            />
            <button type="submit" class="small" data-testid={`create-channel-${s.name}`}>
              Add channel
            </button>
          </div>
        </form>
      )}
      {edited && (
        <Dialog title={`${edited.name}: settings`} testId="channel-settings-dialog" onClose={() => (editing.value = null)}>
          <ChannelSettings channel={edited} onClose={() => (editing.value = null)} />
        </Dialog>
      )}
      {settingsOf.value === s.id && (
        <Dialog title={`${s.name}: settings`} testId="server-settings-dialog" onClose={() => (settingsOf.value = null)}>
          <ServerSettings server={s} onClose={() => (settingsOf.value = null)} />
        </Dialog>
      )}
      {showMembers.value && (
        <Dialog title={`${s.name}: members`} testId="members-dialog" onClose={() => (showMembers.value = false)}>
          <Members server={s} />
        </Dialog>
      )}
      {invite.value && (
        <Dialog title={`Invite friends to ${s.name}`} testId="invite-dialog" onClose={() => (invite.value = null)}>
          <p class="muted">Give them this code: in Hum, Add a server → Join with an invite; headless: <code>hum server join CODE</code>.</p>
          <code class="key invite-code" data-testid={`invite-code-${s.name}`}>
            {invite.value}
          </code>
        </Dialog>
      )}
    </div>
  );
}
