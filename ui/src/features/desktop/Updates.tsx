import { useSignal } from "@preact/signals";
import { useEffect } from "preact/hooks";
import { commands, events, type UpdateView } from "../../lib/bindings";
import { messageOf, unwrap } from "../../lib/api";

/** localStorage key: the release version whose notice the user dismissed. */
export const DISMISSED_KEY = "hum.update.dismissed";
/** After a check, a reconnect does not ask again before this long. */
const RECHECK_MS = 6 * 3600 * 1000;
/** After a check that got no answer, asks again this much later while still connected. */
const RETRY_MS = 30 * 1000;

let lastCheck = 0;

/** Forget when the last automatic check ran (tests). */
export function resetUpdateCheck() {
  lastCheck = 0;
}

function dismissedVersion(): string | null {
  try {
    return localStorage.getItem(DISMISSED_KEY);
  } catch {
    return null;
  }
}

/** Copies `url`; without clipboard access, selects the field showing it so Ctrl+C copies it. */
async function copyUrl(url: string, field: string): Promise<string> {
  try {
    await navigator.clipboard.writeText(url);
    return "Download link copied: open it in your browser.";
  } catch {
    document.querySelector<HTMLInputElement>(`[data-testid=${field}]`)?.select();
    return "Press Ctrl+C to copy the selected link.";
  }
}

function Release(props: { u: UpdateView; testId: string }) {
  const copied = useSignal<string | null>(null);
  const { u } = props;
  if (!u.url) return null;
  const url = u.url;
  return (
    <>
      {u.notes && <p class="small-text">{u.notes}</p>}
      <div class="row">
        <input readOnly value={url} data-testid={`${props.testId}-url`} aria-label="Download page" />
        <button class="secondary" onClick={async () => (copied.value = await copyUrl(url, `${props.testId}-url`))}>
          Copy link
        </button>
      </div>
      {copied.value && <p class="muted small-text">{copied.value}</p>}
    </>
  );
}

/**
 * After connecting, asks the relay whether a newer Hum exists and, if so, says so until the user
 * dismisses that version. Hum never downloads or installs anything by itself.
 */
export function UpdateNotice() {
  const found = useSignal<UpdateView | null>(null);

  useEffect(() => {
    let live = true;
    let connected = false;
    let retry: ReturnType<typeof setTimeout> | undefined;
    async function check() {
      if (!live || !connected || Date.now() - lastCheck < RECHECK_MS) return;
      lastCheck = Date.now();
      try {
        const u = await unwrap(commands.updateCheck());
        if (live && u.newer && u.latest !== dismissedVersion()) found.value = u;
      } catch {
        // No answer (a relay that just went away, a slow one): ask again in a while if still
        // connected, and after the next connect in any case.
        lastCheck = 0;
        clearTimeout(retry);
        retry = setTimeout(() => void check(), RETRY_MS);
      }
    }
    function observe(state: string) {
      connected = state === "connected";
      if (connected) void check();
    }
    let unlisten: (() => void) | undefined;
    // Listen first, then read the status: a "connected" that lands between the two is seen by
    // one of them (reading first could miss it, and nothing would ask until the next reconnect).
    events.relayStatusChanged
      .listen((e) => observe(e.payload.status.state))
      .then((u) => {
        if (live) unlisten = u;
        else u();
      })
      .catch(() => {})
      .then(() => unwrap(commands.relayStatus()))
      .then((s) => observe(s.state))
      .catch(() => {});
    return () => {
      live = false;
      clearTimeout(retry);
      unlisten?.();
    };
  }, []);

  const u = found.value;
  if (!u) return null;
  function dismiss() {
    try {
      localStorage.setItem(DISMISSED_KEY, u!.latest ?? "");
    } catch {
      // not remembered: it shows again next launch
    }
    found.value = null;
  }
  return (
    <div class="update-notice" role="status" data-testid="update-notice">
      <div class="row">
        <strong>
          Hum {u.latest} is available (you have {u.current}).
        </strong>
        <button class="ghost" aria-label="Dismiss" data-testid="update-dismiss" onClick={dismiss}>
          Not now
        </button>
      </div>
      <Release u={u} testId="update-notice" />
    </div>
  );
}

/** Settings → Desktop: check by hand and see what the relay announces. */
export function UpdatesSection() {
  const result = useSignal<UpdateView | null>(null);
  const error = useSignal<string | null>(null);
  const busy = useSignal(false);

  async function check() {
    busy.value = true;
    error.value = null;
    try {
      result.value = await unwrap(commands.updateCheck());
    } catch (e) {
      error.value = messageOf(e);
    } finally {
      busy.value = false;
    }
  }
  const u = result.value;
  return (
    <div data-testid="updates">
      <h3>Updates</h3>
      <p class="muted small-text">
        Hum asks your relay which version is the newest and tells you; it never downloads or installs
        anything by itself.
      </p>
      <button class="secondary" data-testid="update-check" disabled={busy.value} onClick={check}>
        Check for updates
      </button>
      {u && (
        <div data-testid="update-result">
          {u.newer ? (
            <p>
              Hum {u.latest} is available (you have {u.current}).
            </p>
          ) : u.latest ? (
            <p>
              You have Hum {u.current}; the newest your relay knows of is {u.latest}.
            </p>
          ) : (
            <p>You have Hum {u.current}. Your relay does not announce releases.</p>
          )}
          {u.newer && <Release u={u} testId="update-result" />}
        </div>
      )}
      {error.value && (
        <p class="error" role="alert" data-testid="update-error">
          {error.value}
        </p>
      )}
    </div>
  );
}
