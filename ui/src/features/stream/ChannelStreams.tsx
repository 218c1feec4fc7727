import { useSignal } from "@preact/signals";
import { GoLiveDialog } from "./GoLiveDialog";
import { leaveStream, liveStatus, streamsIn, watchStream } from "./store";

/**
 * The live streams of one channel (title, streamer, viewer count, a REC mark when the relay
 * records) with Watch/Leave, and the channel's Go live button.
 */
export function ChannelStreams(props: { server: number; channel: number; channelName: string }) {
  const dialog = useSignal(false);
  const list = streamsIn(props.server, props.channel);
  const st = liveStatus.value;
  const mine = st.streaming?.stream.id;
  const watching = st.watching?.stream.id;
  return (
    <div class="channel-streams" data-testid={`streams-${props.channelName}`}>
      <ul class="streams">
        {list.map((s) => (
          <li key={s.id} class="stream" data-testid={`stream-${s.title}`} data-stream-id={s.id} data-viewers={s.viewers}>
            <span class="live-badge">LIVE</span>
            <span class="stream-title" title={`${s.title} by ${s.streamer_name}`}>
              {s.title} <span class="muted">· {s.streamer_name}</span>
            </span>
            {s.recording && (
              <span class="rec-badge" title="The server records this stream" data-testid={`stream-rec-${s.title}`}>
                REC
              </span>
            )}
            <span class="muted count" title="Viewers" data-testid={`stream-viewers-${s.title}`}>
              {s.viewers} watching
            </span>
            {s.id === mine ? null : s.id === watching ? (
              <button class="small danger" data-testid={`stream-leave-${s.title}`} onClick={() => leaveStream()}>
                Leave
              </button>
            ) : (
              <button class="small" data-testid={`stream-watch-${s.title}`} onClick={() => watchStream(s.id)}>
                Watch
              </button>
            )}
          </li>
        ))}
      </ul>
      {mine === undefined && (
        <button class="small secondary" data-testid={`go-live-${props.channelName}`} onClick={() => (dialog.value = true)}>
          Go live
        </button>
      )}
      {dialog.value && (
        <GoLiveDialog channel={props.channel} channelName={props.channelName} onClose={() => (dialog.value = false)} />
      )}
    </div>
  );
}
