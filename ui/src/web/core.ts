// `@tauri-apps/api/core` for the web build (vite.config.ts aliases it here in `--mode web`): the
// generated bindings' `invoke(cmd, args)` runs the web back end's handler for `cmd`
// (./backend.ts), and `Channel` is a plain callback holder the back end pushes to.

import { dispatch, type Handlers } from "./dispatch";
import { WebBackend } from "./backend";

let handlers: Handlers | null = null;
let backend: WebBackend | null = null;

/** The page's back end (made on first use). */
export function webBackend(): WebBackend {
  if (!backend) {
    backend = new WebBackend(globalThis.localStorage, globalThis.location);
    handlers = backend.handlers();
    // Diagnostics and the browser end-to-end test read the remote audio from here.
    (globalThis as unknown as { humWeb: WebBackend }).humWeb = backend;
  }
  return backend;
}

export async function invoke<T>(cmd: string, args: Record<string, unknown> = {}): Promise<T> {
  webBackend();
  return (await dispatch(handlers!, cmd, args)) as T;
}

/** Tauri's ipc::Channel as the web back end sees it: whoever holds it calls `onmessage`. */
export class Channel<T = unknown> {
  id = 0;
  onmessage: (response: T) => void;
  constructor(onmessage?: (response: T) => void) {
    this.onmessage = onmessage ?? (() => {});
  }
  toJSON(): string {
    return "__CHANNEL__:web";
  }
}

export function isTauri(): boolean {
  return false;
}
