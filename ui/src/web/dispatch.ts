// Command dispatch of the web back end, kept free of browser APIs so vitest checks it: a command
// name (as the generated bindings invoke it) goes to its handler; what the browser cannot do is a
// typed `CommandError` the UI shows, never a silent success.

import type { CommandError, ErrorCode } from "../lib/bindings";
import { RelayError } from "./protocol";

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Handler = (args: any) => unknown;
export type Handlers = Record<string, Handler>;

/** The error code for "the browser cannot do this" (ErrorCode has no dedicated variant yet). */
export const NOT_IN_BROWSER_CODE: ErrorCode = "internal";

export function commandError(code: ErrorCode, message: string): CommandError {
  return { code, message };
}

export function isCommandError(e: unknown): e is CommandError {
  return typeof e === "object" && e !== null && !(e instanceof Error) && typeof (e as CommandError).code === "string" && typeof (e as CommandError).message === "string";
}

/** "Not available in the browser: <why>. Use the desktop app for it." */
export function notInBrowser(why: string): CommandError {
  return commandError(NOT_IN_BROWSER_CODE, `Not available in the browser: ${why}. The desktop app has it.`);
}

/** Why each desktop-only command is not in the browser (commands with no handler and no entry
 *  here get a generic sentence naming the command). */
export const BROWSER_LIMITS: Record<string, string> = {
  desktop_settings_get: "start on login and the tray icon belong to the desktop",
  desktop_settings_set: "start on login and the tray icon belong to the desktop",
  budget_status: "the game-aware bandwidth throttler watches the computer's games and connection",
  bandwidth_measure: "the upload test runs in the desktop app",
  bandwidth_preview: "the bandwidth panel is not in the browser yet",
  bandwidth_save: "the bandwidth panel is not in the browser yet",
  input_monitor_start: "the microphone test outside a call is not in the browser yet",
  device_test_sound: "the speaker test is not in the browser yet",
  video_settings_get: "the browser chooses the camera (its site settings), not the app",
  video_settings_set: "the browser chooses the camera (its site settings), not the app",
  video_sources_list: "the browser chooses the camera (its site settings), not the app",
  video_bench_start: "the video benchmark runs in the desktop app",
  live_start: "livestreams are not in the browser yet",
  live_watch: "livestreams are not in the browser yet",
  live_quality: "livestreams are not in the browser yet",
  live_status: "livestreams are not in the browser yet",
  call_start: "1-on-1 calls are not in the browser yet",
  call_get: "1-on-1 calls are not in the browser yet",
  call_accept: "1-on-1 calls are not in the browser yet",
  call_decline: "1-on-1 calls are not in the browser yet",
  call_hangup: "1-on-1 calls are not in the browser yet",
  friends_list: "friends are not in the browser yet",
  friend_request: "friends are not in the browser yet",
  friend_respond: "friends are not in the browser yet",
  friend_remove: "friends are not in the browser yet",
  friend_card: "friends are not in the browser yet",
  handle_set: "handles are not in the browser yet",
  privacy_get: "the privacy switches (hide my IP, end-to-end encryption on the SFU) are not in the browser yet",
  privacy_set: "the privacy switches (hide my IP, end-to-end encryption on the SFU) are not in the browser yet",
  privacy_status: "the privacy switches (hide my IP, end-to-end encryption on the SFU) are not in the browser yet",
  safety_number: "safety numbers are not in the browser yet",
};

/** Turns anything a handler threw into a CommandError. */
export function toCommandError(e: unknown): CommandError {
  if (isCommandError(e)) return e;
  if (e instanceof RelayError) {
    if (e.code === "closed" || e.code === "relay_unavailable") return commandError("relay_unavailable", e.message);
    if (e.code === "not_found" || e.code === "invite_not_found") return commandError("not_found", e.message);
    if (e.code === "bad_request") return commandError("invalid_input", e.message);
    return commandError("rejected", e.message);
  }
  if (typeof DOMException !== "undefined" && e instanceof DOMException) {
    if (["NotAllowedError", "NotFoundError", "NotReadableError", "OverconstrainedError"].includes(e.name))
      return commandError("device", `Microphone: ${e.message || e.name}`);
  }
  if (e instanceof Error) return commandError("internal", e.message);
  return commandError("internal", String(e));
}

/**
 * Runs command `cmd`. Rejects with a plain CommandError object (not an Error: the generated
 * bindings' `typedError` turns plain rejections into `{status: "error"}` and rethrows Errors).
 */
export async function dispatch(handlers: Handlers, cmd: string, args: Record<string, unknown> = {}): Promise<unknown> {
  const h = Object.prototype.hasOwnProperty.call(handlers, cmd) ? handlers[cmd] : undefined;
  if (!h) throw notInBrowser(BROWSER_LIMITS[cmd] ?? `\`${cmd}\` is not in the browser yet`);
  try {
    return await h(args);
  } catch (e) {
    throw toCommandError(e);
  }
}

/** `hum://invite/CODE`, `https://host/invite/CODE` or a bare code -> the code (null: not one). */
export function inviteCode(input: string): string | null {
  const s = input.trim();
  const m = s.match(/^(?:hum:\/\/invite\/|https?:\/\/[^/]+\/invite\/)?([A-Za-z0-9_-]{1,64})\/?$/);
  return m ? m[1] : null;
}

/** A relay address the browser can open: ws:// or wss://, normalised; else an invalid_input. */
export function normaliseRelayUrl(input: string): string {
  let u: URL;
  try {
    u = new URL(input.trim());
  } catch {
    throw commandError("invalid_input", `"${input}" is not an address; expected ws://HOST:PORT/ws or wss://HOST/ws`);
  }
  if (u.protocol !== "ws:" && u.protocol !== "wss:")
    throw commandError("invalid_input", `The relay address must start with ws:// or wss:// (got ${u.protocol})`);
  if (u.pathname === "/") u.pathname = "/ws";
  return u.toString();
}

/** A display name as the relay accepts it (1-32 characters after trimming). */
export function checkDisplayName(name: string): string {
  const n = name.trim();
  if (n.length === 0) throw commandError("invalid_input", "Pick a display name.");
  if ([...n].length > 32) throw commandError("invalid_input", "A display name is at most 32 characters.");
  return n;
}
