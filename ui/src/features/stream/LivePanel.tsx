import { formatRate } from "../../lib/api";
import type { LiveLayer, StreamingView, WatchingView } from "../../lib/bindings";
import { VideoTile } from "../video/VideoTile";
import { dismissNotice, leaveStream, liveBusy, liveError, liveStatus, setQuality, stopLive } from "./store";

/** "1.2 MB", "340 kB" from bytes. */
export function formatBytes(n: number): string {
  if (n >= 1_000_000_000) return `${(n / 1_000_000_000).toFixed(2)} GB`;
  if (n >= 1_000_000) return `${(n / 1_000_000).toFixed(1)} MB`;
  return `${Math.round(n / 1000)} kB`;
}

/** A small line graph of relay upload over the last minute (bits/s), scaled to its peak. */
export function RelayGraph(props: { history: number[]; budget: number }) {
  const w = 180;
  const h = 40;
  const top = Math.max(props.budget, ...props.history, 1);
  const pts = props.history.map((v, i) => `${((i + 60 - props.history.length) / 59) * w},${h - (v / top) * h}`);
  return (
    <svg class="relay-graph" width={w} height={h} viewBox={`0 0 ${w} ${h}`} data-testid="relay-graph" aria-label="Relay upload over the last minute">
      <line x1="0" x2={w} y1={h - (props.budget / top) * h} y2={h - (props.budget / top) * h} class="budget-line" />
      {pts.length > 1 && <polyline points={pts.join(" ")} class="relay-line" fill="none" />}
    </svg>
  );
}

function Sending(props: { s: StreamingView }) {
  const s = props.s;
  return (
    <section class="live-card" data-testid="live-sending" data-stream-id={s.stream.id}>
      <header class="row">
        <span class="live-badge">LIVE</span>
        <strong data-testid="live-sending-title">{s.stream.title}</strong>
        {s.stream.recording && <span class="rec-badge">REC</span>}
        <button class="small danger" data-testid="live-stop" onClick={() => stopLive()}>
          End stream
        </button>
      </header>
      <p class="muted small-text">
        <span data-testid="live-sending-viewers" data-viewers={s.viewers}>
          {s.viewers} watching
        </span>{" "}
        · <span data-testid="live-sending-chunks" data-chunks={s.chunks}>{s.chunks} chunks</span> · uploaded{" "}
        {formatBytes(s.uploaded_bytes)} to the relay (one copy, however many watch)
      </p>
    </section>
  );
}

/**
 * The player's quality menu, as Twitch and YouTube have it: Auto (showing the layer auto plays
 * now) and each layer the stream publishes, named by the engine ("360p", "180p", "Audio only").
 * A pick switches without a gap; until the player cuts over it says "switching".
 */
export function QualityMenu(props: { w: WatchingView }) {
  const w = props.w;
  const label = (l: LiveLayer) => w.qualities.find((q) => q.layer === l)?.label ?? l;
  const picked = w.quality ?? "auto";
  const switching = w.quality !== null && w.quality !== w.playing;
  return (
    <label class="quality-menu row small-text" data-testid="live-quality" data-quality={picked} data-playing={w.playing}>
      Quality
      <select
        data-testid="live-quality-select"
        value={picked}
        disabled={liveBusy.value}
        onChange={(e) => {
          const v = (e.currentTarget as HTMLSelectElement).value;
          setQuality(v === "auto" ? null : (v as LiveLayer));
        }}
      >
        <option value="auto">{w.quality === null ? `Auto (${label(w.playing)})` : "Auto"}</option>
        {w.qualities.map((q) => (
          <option key={q.layer} value={q.layer}>
            {q.label}
          </option>
        ))}
      </select>
      {switching && (
        <span class="muted" data-testid="live-quality-switching">
          switching from {label(w.playing)}…
        </span>
      )}
    </label>
  );
}

function Player(props: { w: WatchingView }) {
  const w = props.w;
  const fromPeers = w.bytes_from_root + w.bytes_from_peers === 0 ? 0 : (100 * w.bytes_from_peers) / (w.bytes_from_root + w.bytes_from_peers);
  return (
    <section class="live-card player" data-testid="live-player">
      <header class="row">
        <span class="live-badge">LIVE</span>
        <strong data-testid="live-player-title">{w.stream.title}</strong>
        <span class="muted">by {w.stream.streamer_name}</span>
        {w.stream.recording && (
          <span class="rec-badge" title="The server records this stream" data-testid="live-player-rec">
            REC
          </span>
        )}
        <button class="small danger" data-testid="live-leave" onClick={() => leaveStream()}>
          Leave
        </button>
      </header>
      <VideoTile streamId={w.video_id} label={`${w.stream.title} by ${w.stream.streamer_name}`} />
      <QualityMenu w={w} />
      <p class="muted small-text" data-testid="live-player-stats" data-played={w.played}>
        {w.started ? (
          <>
            {w.behind_live_ms !== null && <>{(w.behind_live_ms / 1000).toFixed(1)} s behind live · </>}
            continuity {w.continuity_pct}% · {Math.round(fromPeers)}% from other viewers
          </>
        ) : (
          "Connecting…"
        )}
      </p>
      <div class="contribution" data-testid="live-contribution" data-relayed={w.relayed_bytes} data-budget={w.relay_budget}>
        <h3>Your contribution</h3>
        {w.relay_budget === 0 ? (
          <p class="muted small-text" data-testid="relay-off">
            Relaying is off: set Relay to Low or more in Settings → Bandwidth to pass the stream on to other viewers.
          </p>
        ) : (
          <>
            <p class="small-text">
              Relay upload now <strong data-testid="relay-now">{formatRate(w.relay_now)}</strong> of{" "}
              {formatRate(w.relay_budget)} · relayed <strong data-testid="relay-total">{formatBytes(w.relayed_bytes)}</strong> (
              {w.chunks_relayed} chunks) · saved the server {formatBytes(w.relayed_bytes)}
            </p>
            <RelayGraph history={w.relay_history} budget={w.relay_budget} />
          </>
        )}
      </div>
    </section>
  );
}

/** What I stream and what I watch, above the stage; a stream's end stays as a notice. */
export function LivePanel() {
  const st = liveStatus.value;
  if (!st.streaming && !st.watching && !st.notice && !liveError.value) return null;
  return (
    <div class="live-panel" data-testid="live-panel">
      {st.notice && (
        <p class="notice warning" data-testid="live-notice">
          {st.notice}{" "}
          <button class="ghost small" onClick={() => dismissNotice()}>
            OK
          </button>
        </p>
      )}
      {liveError.value && (
        <p class="error notice" role="alert" data-testid="live-error">
          {liveError.value}
        </p>
      )}
      {st.streaming && <Sending s={st.streaming} />}
      {st.watching && <Player w={st.watching} />}
    </div>
  );
}
