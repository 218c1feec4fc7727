//! Counters for `GET /metrics`, in the Prometheus text exposition format (written by hand: a
//! dozen lines do not need a metrics framework).

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hum_proto::signal::ErrorCode;

use crate::hub::HubStats;

#[derive(Debug, Default)]
pub struct Metrics {
    /// Open WebSocket connections on /ws (logged in or not).
    pub connections: AtomicU64,
    /// Open TCP connections: WebSockets, plain HTTP and connections still sending their request.
    pub tcp_connections: AtomicU64,
    pub connections_total: AtomicU64,
    pub connections_rejected: AtomicU64,
    /// The connection cap in force (`--max-connections` lowered to fit the open-file limit).
    pub max_connections: AtomicU64,
    /// The soft RLIMIT_NOFILE after raising it at start (0: unknown).
    pub open_file_limit: AtomicU64,
    pub messages_in: AtomicU64,
    /// Frames queued to clients (a fan-out to N clients counts N).
    pub messages_out: AtomicU64,
    pub errors: [AtomicU64; ERROR_SLOTS],
    pub closed_too_slow: AtomicU64,
    pub closed_abuse: AtomicU64,
    pub probes_active: AtomicU64,
    pub probes_total: AtomicU64,
    /// Probes refused because their source address already runs its share.
    pub probes_refused_per_address: AtomicU64,
    /// Bytes queued to clients and not yet written, all connections together.
    pub outbox_bytes: Arc<AtomicU64>,
    // Gauges copied from the hub after each command.
    pub sessions: AtomicU64,
    pub users: AtomicU64,
    pub servers: AtomicU64,
    pub channels: AtomicU64,
    pub voice_participants: AtomicU64,
    pub calls: AtomicU64,
    /// Live streams whose root seed + tracker this relay hosts now.
    pub streams_hosted: AtomicU64,
    /// Chunk payload bytes streamers uploaded (accepted), and uploads refused.
    pub stream_upload_bytes: AtomicU64,
    pub stream_uploads_refused: AtomicU64,
    /// Chunk bytes the root seeds sent to viewers (fragments of `data`).
    pub stream_root_bytes: AtomicU64,
    /// Messages to a viewer dropped because its /mesh queue was full.
    pub stream_frames_dropped: AtomicU64,
    /// /mesh frames that did not reassemble or decode.
    pub stream_wire_errors: AtomicU64,
    /// Bans viewers reported to the trackers (a peer served them chunks that failed verification).
    pub stream_tracker_bans: AtomicU64,
    /// Viewers that announced their leave to a stream's tracker (`leave`: a graceful leave,
    /// docs/stream.md "Leaving"); one killed or whose connection dropped is not counted.
    pub stream_leaves_announced: AtomicU64,
    /// Chunks (and their payload bytes) the recording store served on `/mesh` (playback and
    /// the on-demand mesh's root).
    pub recording_chunks_served: AtomicU64,
    pub recording_bytes_served: AtomicU64,
    /// The embedded SFU's counters, refreshed once a second (`None`: no SFU).
    pub sfu: std::sync::Mutex<Option<hum_sfu::Metrics>>,
}

const ERROR_SLOTS: usize = 32;

/// The embedded SFU's counters as `hum_sfu_*` lines.
fn render_sfu(out: &mut String, m: &hum_sfu::Metrics) {
    let rows: [(&str, &str, &str, u64); 16] = [
        (
            "participants",
            "gauge",
            "Participants connected to the SFU.",
            m.participants,
        ),
        (
            "estimating_participants",
            "gauge",
            "SFU participants whose bandwidth is estimated and paced (those with video).",
            m.estimating,
        ),
        (
            "datagrams_in_total",
            "counter",
            "UDP datagrams received.",
            m.datagrams_in,
        ),
        (
            "datagrams_out_total",
            "counter",
            "UDP datagrams sent.",
            m.datagrams_out,
        ),
        (
            "bytes_in_total",
            "counter",
            "UDP bytes received.",
            m.bytes_in,
        ),
        ("bytes_out_total", "counter", "UDP bytes sent.", m.bytes_out),
        (
            "rtp_in_total",
            "counter",
            "RTP packets received from publishers.",
            m.rtp_in,
        ),
        (
            "rtp_forwarded_total",
            "counter",
            "RTP packets forwarded to subscribers.",
            m.rtp_forwarded,
        ),
        (
            "unparsable_total",
            "counter",
            "Datagrams that are not STUN, DTLS, RTP or RTCP.",
            m.unparsable,
        ),
        (
            "unrouted_total",
            "counter",
            "Datagrams no participant accepts.",
            m.unrouted,
        ),
        (
            "send_dropped_total",
            "counter",
            "Datagrams dropped on a full socket buffer.",
            m.send_dropped,
        ),
        (
            "unknown_stream_total",
            "counter",
            "RTP of no publication.",
            m.unknown_stream,
        ),
        (
            "malformed_vp8_total",
            "counter",
            "Video payloads whose VP8 descriptor does not parse.",
            m.malformed_vp8,
        ),
        (
            "keyframe_requests_in_total",
            "counter",
            "Keyframe requests from subscribers.",
            m.keyframe_requests_in,
        ),
        (
            "rtc_errors_total",
            "counter",
            "WebRTC errors (a participant's connection failed).",
            m.rtc_errors,
        ),
        ("up", "gauge", "1: the SFU runs.", 1),
    ];
    for (name, kind, help, v) in rows {
        let _ = writeln!(
            out,
            "# HELP hum_sfu_{name} {help}\n# TYPE hum_sfu_{name} {kind}\nhum_sfu_{name} {v}"
        );
    }
}

fn slot(code: ErrorCode) -> usize {
    ErrorCode::ALL
        .iter()
        .position(|c| *c == code)
        .unwrap_or(0)
        .min(ERROR_SLOTS - 1)
}

impl Metrics {
    pub fn error(&self, code: ErrorCode) {
        self.errors[slot(code)].fetch_add(1, Ordering::Relaxed);
    }

    pub fn set_hub(&self, s: HubStats) {
        self.sessions.store(s.sessions as u64, Ordering::Relaxed);
        self.users.store(s.users as u64, Ordering::Relaxed);
        self.servers.store(s.servers as u64, Ordering::Relaxed);
        self.channels.store(s.channels as u64, Ordering::Relaxed);
        self.voice_participants
            .store(s.voice_participants as u64, Ordering::Relaxed);
        self.calls.store(s.calls as u64, Ordering::Relaxed);
    }

    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let mut metric = |name: &str, kind: &str, help: &str, v: &AtomicU64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        };
        metric(
            "hum_relay_connections",
            "gauge",
            "Open WebSocket connections on /ws.",
            &self.connections,
        );
        metric(
            "hum_relay_tcp_connections",
            "gauge",
            "Open TCP connections (WebSockets, HTTP requests, pending upgrades).",
            &self.tcp_connections,
        );
        metric(
            "hum_relay_connections_total",
            "counter",
            "WebSocket connections accepted.",
            &self.connections_total,
        );
        metric(
            "hum_relay_connections_rejected_total",
            "counter",
            "Connections refused at the connection limit.",
            &self.connections_rejected,
        );
        metric(
            "hum_relay_max_connections",
            "gauge",
            "Connection cap in force (fits the open-file limit).",
            &self.max_connections,
        );
        metric(
            "hum_relay_open_file_limit",
            "gauge",
            "Soft open-file limit after raising it at start.",
            &self.open_file_limit,
        );
        metric(
            "hum_relay_sessions",
            "gauge",
            "Logged-in sessions.",
            &self.sessions,
        );
        metric(
            "hum_relay_messages_in_total",
            "counter",
            "Text frames received from clients.",
            &self.messages_in,
        );
        metric(
            "hum_relay_messages_out_total",
            "counter",
            "Frames queued to clients.",
            &self.messages_out,
        );
        metric(
            "hum_relay_closed_slow_total",
            "counter",
            "Connections closed for not reading fast enough.",
            &self.closed_too_slow,
        );
        metric(
            "hum_relay_closed_abuse_total",
            "counter",
            "Connections closed for flooding or oversized frames.",
            &self.closed_abuse,
        );
        metric(
            "hum_relay_outbox_bytes",
            "gauge",
            "Bytes queued to clients, not yet written.",
            &self.outbox_bytes,
        );
        metric("hum_relay_users", "gauge", "Accounts known.", &self.users);
        metric(
            "hum_relay_servers",
            "gauge",
            "Servers (communities).",
            &self.servers,
        );
        metric(
            "hum_relay_channels",
            "gauge",
            "Voice channels.",
            &self.channels,
        );
        metric(
            "hum_relay_voice_participants",
            "gauge",
            "Users in a voice channel.",
            &self.voice_participants,
        );
        metric(
            "hum_relay_calls",
            "gauge",
            "1-on-1 calls ringing or active.",
            &self.calls,
        );
        metric(
            "hum_relay_probes_active",
            "gauge",
            "Bandwidth probes running.",
            &self.probes_active,
        );
        metric(
            "hum_relay_probes_total",
            "counter",
            "Bandwidth probes started.",
            &self.probes_total,
        );
        metric(
            "hum_relay_probes_refused_per_address_total",
            "counter",
            "Bandwidth probes refused (HTTP 429): their address already runs --probes-per-address.",
            &self.probes_refused_per_address,
        );
        metric(
            "hum_relay_streams_hosted",
            "gauge",
            "Live streams whose root seed and tracker run in this relay.",
            &self.streams_hosted,
        );
        metric(
            "hum_relay_stream_upload_bytes_total",
            "counter",
            "Chunk payload bytes streamers uploaded to their root seed (accepted).",
            &self.stream_upload_bytes,
        );
        metric(
            "hum_relay_stream_uploads_refused_total",
            "counter",
            "Uploaded chunks refused (signature, hash, layer, size or order).",
            &self.stream_uploads_refused,
        );
        metric(
            "hum_relay_stream_root_bytes_total",
            "counter",
            "Chunk bytes the root seeds sent to viewers.",
            &self.stream_root_bytes,
        );
        metric(
            "hum_relay_stream_frames_dropped_total",
            "counter",
            "Mesh messages dropped because a viewer's /mesh queue was full.",
            &self.stream_frames_dropped,
        );
        metric(
            "hum_relay_stream_wire_errors_total",
            "counter",
            "/mesh frames that did not reassemble or decode.",
            &self.stream_wire_errors,
        );
        metric(
            "hum_relay_stream_tracker_bans_total",
            "counter",
            "Bans viewers reported to the trackers (a peer served chunks that failed verification).",
            &self.stream_tracker_bans,
        );
        metric(
            "hum_relay_stream_leaves_announced_total",
            "counter",
            "Viewers that announced their leave first (graceful: their downstreams were re-seated before they went).",
            &self.stream_leaves_announced,
        );
        metric(
            "hum_relay_recording_chunks_served_total",
            "counter",
            "Recorded chunks the relay's store sent (playback and the on-demand mesh's root).",
            &self.recording_chunks_served,
        );
        metric(
            "hum_relay_recording_bytes_served_total",
            "counter",
            "Payload bytes of the recorded chunks the relay's store sent.",
            &self.recording_bytes_served,
        );
        let _ = writeln!(
            out,
            "# HELP hum_relay_errors_total Error replies sent, by code."
        );
        let _ = writeln!(out, "# TYPE hum_relay_errors_total counter");
        for code in ErrorCode::ALL {
            let v = self.errors[slot(*code)].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "hum_relay_errors_total{{code=\"{}\"}} {v}",
                code.as_str()
            );
        }
        if let Some(m) = self.sfu.lock().ok().and_then(|g| g.clone()) {
            render_sfu(&mut out, &m);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.connections.store(3, Ordering::Relaxed);
        m.error(ErrorCode::NotFriends);
        m.error(ErrorCode::NotFriends);
        let text = m.render();
        assert!(text.contains("\nhum_relay_connections 3\n"));
        assert!(text.contains("hum_relay_errors_total{code=\"not_friends\"} 2\n"));
        assert!(text.contains("# TYPE hum_relay_channels gauge\n"));
        assert!(ErrorCode::ALL.len() <= ERROR_SLOTS);
    }
}
