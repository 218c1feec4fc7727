import { useSignal } from "@preact/signals";

const NOTE_STYLE = "position:fixed;right:8px;top:8px;max-width:440px;z-index:50;background:var(--bg-2, #222);padding:6px;border-radius:6px";

/** What the browser keeps, and what it cannot do: said on the page, not hidden (docs/browser.md). */
export function StorageNote() {
  const open = useSignal(false);
  return (
    <aside class="web-note muted small-text" data-testid="web-note" style={NOTE_STYLE}>
      <button class="small secondary" data-testid="web-note-toggle" onClick={() => (open.value = !open.value)}>
        Hum in the browser {open.value ? "▾" : "▸"}
      </button>
      {open.value && (
        <div data-testid="web-note-body">
          <p>
            Your identity is an Ed25519 key made by this browser. Its private half is stored non-extractable in this site's
            IndexedDB (database <code>hum</code>): the page can sign with it but nobody, this page included, can read it.
            Clearing this site's data deletes it, and with it your account here. Settings (relay address, voice, volumes)
            are in this site's localStorage (<code>hum.*</code>). Audio goes directly to the others in the channel (WebRTC), or through
            the relay's SFU in a big channel; video (cameras, the others' screen shares) works in channels on the SFU.
          </p>
          <p>
            Not in the browser yet: video in small (mesh) channels, sharing your screen, livestreams, 1-on-1 calls, friends,
            exporting the key to the desktop app. Not possible in a browser: a global push-to-talk hotkey, the game-aware
            bandwidth throttler, the tray.
          </p>
        </div>
      )}
    </aside>
  );
}
