// `@tauri-apps/api/event` for the web build (vite.config.ts aliases it here in `--mode web`): the
// generated bindings' `events.x.listen(...)` land on this in-page bus, and the web back end
// (./backend.ts) emits on it what the Tauri back end emits from Rust.

export type EventName = string;
export type EventTarget = string | { kind: string; label?: string };
export interface Event<T> {
  event: EventName;
  id: number;
  payload: T;
}
export type EventCallback<T> = (event: Event<T>) => void;
export type UnlistenFn = () => void;

const listeners = new Map<string, Set<EventCallback<unknown>>>();
let nextId = 1;

export async function listen<T>(event: EventName, handler: EventCallback<T>): Promise<UnlistenFn> {
  let set = listeners.get(event);
  if (!set) listeners.set(event, (set = new Set()));
  const h = handler as EventCallback<unknown>;
  set.add(h);
  return () => {
    set.delete(h);
  };
}

export async function once<T>(event: EventName, handler: EventCallback<T>): Promise<UnlistenFn> {
  const un = await listen<T>(event, (e) => {
    un();
    handler(e);
  });
  return un;
}

/** Delivers `payload` to every listener of `event`, synchronously; a throwing listener does not
 *  stop the others. */
export function emitLocal(event: EventName, payload: unknown) {
  for (const h of [...(listeners.get(event) ?? [])]) {
    try {
      h({ event, id: nextId++, payload });
    } catch (e) {
      console.error(`listener of ${event} failed`, e);
    }
  }
}

export async function emit(event: EventName, payload?: unknown): Promise<void> {
  emitLocal(event, payload ?? null);
}

export async function emitTo(_target: EventTarget | string, event: EventName, payload?: unknown): Promise<void> {
  emitLocal(event, payload ?? null);
}

/** How many listeners `event` has (tests). */
export function listenerCount(event: EventName): number {
  return listeners.get(event)?.size ?? 0;
}
