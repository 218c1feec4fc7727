// Shared fixtures for the UI tests: a fake backend behind Tauri's mockIPC.
import { clearMocks, mockIPC } from "@tauri-apps/api/mocks";
import type { BandwidthReport, BandwidthSettings, ChannelView, IdentityInfo, MemberVoice, VoiceSettings } from "./lib/bindings";

export const alice: IdentityInfo = { display_name: "alice", public_key: "ab".repeat(32) };

const ALL = { join: true, speak: true, video: true, stream: true };

/** A voice channel where everyone may do everything. */
export function channelFixture(id: number, name: string, max: number, roster: MemberVoice[]): ChannelView {
  return { id, name, max_participants: max, permissions: { member: ALL, admin: ALL }, roster, mode: "mesh", mesh_limit: null, speaker: null, paused_videos: [] };
}

export const defaultBandwidth: BandwidthSettings = {
  version: 1,
  total_upload: { mode: "manual", rate: 10_000_000 },
  reserved: { mode: "manual", rate: 5_000_000 },
  relay: { level: "low" },
  download_quality: "auto",
  protection: { queuing_delay_target_ms: 12, game_server: null, game_processes: [] },
  last_probe: null,
};

/** The report hum-budget gives for manual total/reserved, enough for the panel's numbers. */
export function reportFor(s: BandwidthSettings): BandwidthReport {
  const total = s.total_upload.mode === "manual" ? s.total_upload.rate : 0;
  const reserved = s.reserved.mode === "manual" ? s.reserved.rate : Math.round(total * 0.25);
  const available = Math.max(0, total - reserved);
  const presets = { off: 0, low: available * 0.1, medium: available * 0.25, high: available * 0.5 };
  const relay = s.relay.level === "custom" ? Math.min(s.relay.rate, available) : presets[s.relay.level];
  const errors =
    reserved > total && s.total_upload.mode === "manual"
      ? [
          {
            field: "reserved" as const,
            code: "reserved_exceeds_total",
            message: "Reserved for other apps is more than your total upload.",
          },
        ]
      : [];
  return {
    effective: {
      total,
      total_source: s.total_upload.mode === "manual" ? { source: "manual" } : { source: "not_measured" },
      reserved: Math.min(reserved, total),
      reserved_source: s.reserved.mode === "manual" ? "manual" : "estimated",
      available,
      relay,
      relay_presets: presets,
      download_quality: s.download_quality,
      conservative: false,
      warnings: [],
    },
    errors,
  };
}

export const defaultVoice: VoiceSettings = {
  transmit_mode: "voice_activity",
  ptt_shortcut: "F8",
  sensitivity_dbfs: -45,
  noise_suppression: true,
  input_device: null,
  output_device: null,
  user_volumes: {},
};

export type Calls = { cmd: string; args: Record<string, unknown> }[];

/** Installs a fake backend; `overrides` answer specific commands. Returns the list of calls made. */
export function fakeBackend(
  overrides: Record<string, (args: Record<string, unknown>) => unknown> = {},
): Calls {
  clearMocks();
  const calls: Calls = [];
  let identity: IdentityInfo | null = null;
  let bandwidth = defaultBandwidth;
  mockIPC(
    (cmd, payload) => {
      const args = (payload ?? {}) as Record<string, unknown>;
      calls.push({ cmd, args });
      if (overrides[cmd]) return overrides[cmd](args);
      switch (cmd) {
        case "identity_get":
          return identity;
        case "identity_create":
          identity = { ...alice, display_name: String(args.displayName) };
          return identity;
        case "relay_url_set":
          return String(args.url).trim();
        case "settings_get":
          return {
            relay_url: "ws://127.0.0.1:7700/ws",
            bandwidth,
            bandwidth_report: reportFor(bandwidth),
            bandwidth_notice: null,
          };
        case "bandwidth_preview":
          return reportFor(args.settings as BandwidthSettings);
        case "bandwidth_save":
          bandwidth = args.settings as BandwidthSettings;
          return reportFor(bandwidth);
        case "voice_settings_get":
          return defaultVoice;
        case "voice_settings_set":
          return args.settings;
        case "relay_connect":
        case "relay_status":
          return { state: "connecting", attempt: 1 };
        case "servers_list":
          return [];
        case "server_bans":
          return [];
        case "my_voice":
          return { channel: null, muted: false, deafened: false, muted_by_channel: false, audio_notice: null };
        case "devices_list":
          return [];
        case "friends_list":
          return { friends: [], incoming: [], outgoing: [] };
        case "friend_card":
          return { public_key: alice.public_key, handle: null, friend_link: `hum://friend/${alice.public_key}` };
        case "links_take":
          return [];
        case "tray_sync":
          return false;
        case "update_check":
          return { current: "0.1.0", latest: null, url: null, notes: null, newer: false };
        case "desktop_settings_get":
          return { settings: { start_on_login: false, close_to_tray: false }, tray: false, autostart_error: null };
        case "video_settings_get":
          return { source: "camera", quality: "720p30" };
        case "video_settings_set":
          return args.settings;
        case "video_sources_list":
          return [{ id: "pattern", name: "Test pattern (moving, with a frame code)" }];
        case "camera_set":
          return args.on
            ? { on: true, stream_id: "self", source: "test pattern 1280x720@30", width: 1280, height: 720, fps: 30 }
            : { on: false, stream_id: "self", source: "", width: 0, height: 0, fps: 0 };
        case "servers_watch":
        case "video_subscribe":
        case "video_keyframe":
        case "levels_subscribe":
        case "stats_subscribe":
        case "input_monitor_start":
        case "input_monitor_stop":
          return null;
        case "privacy_get":
          return { hide_ip: false, e2ee: false };
        case "privacy_set":
          return args.settings;
        case "privacy_status":
          return {
            channel: null,
            hide_ip: false,
            e2ee: false,
            epoch: null,
            decrypted_frames: 0,
            refused_frames: 0,
            members: [],
          };
        case "live_list":
          return [];
        case "live_status":
          return { streaming: null, watching: null, notice: null };
        case "call_get":
          return { phase: "idle", call: null, peer: null, peer_speaking: false, ended: null };
        case "budget_status":
          return {
            running: true,
            measuring: false,
            relay_cap: 0,
            throttling: false,
            message: null,
            game: null,
            last_probe: null,
          };
        default:
          throw new Error(`unexpected command ${cmd}`);
      }
    },
    { shouldMockEvents: true },
  );
  return calls;
}
