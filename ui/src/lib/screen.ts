import { signal } from "@preact/signals";
import { commands, type ScreenShareView, type ShareQuality, type ShareTargetsView } from "./bindings";
import { messageOf, unwrap } from "./api";
import { openVideo } from "./video";

/** The stream id of someone's screen share (src-tauri `remote_stream_id`). */
export function screenStreamOf(userId: string): string {
  return `${userId}/screen`;
}

/** My screen share (null = not sharing), and what I share ("Test pattern", a window's title). */
export const sharing = signal<(ScreenShareView & { name: string }) | null>(null);
/** Why the share did not start (or stopped). */
export const shareError = signal<string | null>(null);
export const shareBusy = signal(false);

/** What the picker can offer (monitors, windows, the test pattern) and why capture is missing. */
export async function listShareTargets(): Promise<ShareTargetsView> {
  return unwrap(commands.screenTargetsList());
}

/** Starts sharing `target` (an id from the list) at `quality`; `name` is what the bar shows. */
export async function startShare(target: string, name: string, quality: ShareQuality): Promise<boolean> {
  shareBusy.value = true;
  try {
    await openVideo();
    const view = await unwrap(commands.screenShareStart(target, quality));
    sharing.value = { ...view, sharing: true, name };
    shareError.value = null;
    return true;
  } catch (e) {
    shareError.value = messageOf(e);
    return false;
  } finally {
    shareBusy.value = false;
  }
}

/** Stops my screen share. */
export async function stopShare(): Promise<void> {
  shareBusy.value = true;
  try {
    await unwrap(commands.screenShareStop());
    sharing.value = null;
    shareError.value = null;
  } catch (e) {
    shareError.value = messageOf(e);
  } finally {
    shareBusy.value = false;
  }
}

/** For tests. */
export function resetScreen() {
  sharing.value = null;
  shareError.value = null;
  shareBusy.value = false;
}
