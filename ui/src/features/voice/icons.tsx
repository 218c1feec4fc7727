import type { ComponentChildren } from "preact";

// Inline SVG icons: no icon font, so nothing renders as a missing-glyph box.

/** A speaker with sound waves: a voice channel. */
export function SpeakerIcon(props: { size?: number }) {
  const s = props.size ?? 16;
  return (
    <svg
      class="icon"
      width={s}
      height={s}
      viewBox="0 0 24 24"
      aria-hidden="true"
      fill="none"
      stroke="currentColor"
      stroke-width="2"
      stroke-linecap="round"
      stroke-linejoin="round"
    >
      <path d="M4 9h4l5-4v14l-5-4H4z" fill="currentColor" />
      <path d="M16.5 8.5a5 5 0 0 1 0 7" />
      <path d="M19.5 5.5a9 9 0 0 1 0 13" />
    </svg>
  );
}

/** A gear: channel settings. */
export function GearIcon(props: { size?: number }) {
  const s = props.size ?? 16;
  return (
    <svg class="icon" width={s} height={s} viewBox="0 0 24 24" aria-hidden="true" fill="none" stroke="currentColor" stroke-width="2">
      <circle cx="12" cy="12" r="3" />
      <path d="M12 2v3M12 19v3M2 12h3M19 12h3M4.9 4.9l2.1 2.1M17 17l2.1 2.1M4.9 19.1 7 17M17 7l2.1-2.1" stroke-linecap="round" />
    </svg>
  );
}

/** A handset: calls. */
export function PhoneIcon(props: { size?: number }) {
  const s = props.size ?? 16;
  return (
    <svg class="icon" width={s} height={s} viewBox="0 0 24 24" aria-hidden="true" fill="currentColor">
      <path d="M6.6 10.8a15.1 15.1 0 0 0 6.6 6.6l2.2-2.2a1 1 0 0 1 1-.25 11.4 11.4 0 0 0 3.6.57 1 1 0 0 1 1 1V20a1 1 0 0 1-1 1A17 17 0 0 1 3 4a1 1 0 0 1 1-1h3.5a1 1 0 0 1 1 1c0 1.25.2 2.46.57 3.6a1 1 0 0 1-.25 1z" />
    </svg>
  );
}

function Stroke(props: { size?: number; children: ComponentChildren }) {
  const s = props.size ?? 18;
  return (
    <svg
      class="icon"
      width={s}
      height={s}
      viewBox="0 0 24 24"
      aria-hidden="true"
      fill="none"
      stroke="currentColor"
      stroke-width="2"
      stroke-linecap="round"
      stroke-linejoin="round"
    >
      {props.children}
    </svg>
  );
}

/** A microphone (struck through when `off`). */
export function MicIcon(props: { size?: number; off?: boolean }) {
  return (
    <Stroke size={props.size}>
      <rect x="9" y="3" width="6" height="11" rx="3" />
      <path d="M5 11a7 7 0 0 0 14 0M12 18v3" />
      {props.off && <path d="M4 4l16 16" />}
    </Stroke>
  );
}

/** Headphones (struck through when `off`). */
export function HeadphonesIcon(props: { size?: number; off?: boolean }) {
  return (
    <Stroke size={props.size}>
      <path d="M4 17v-4a8 8 0 0 1 16 0v4" />
      <rect x="3" y="14" width="4" height="6" rx="1.5" />
      <rect x="17" y="14" width="4" height="6" rx="1.5" />
      {props.off && <path d="M4 4l16 16" />}
    </Stroke>
  );
}

export function CameraIcon(props: { size?: number }) {
  return (
    <Stroke size={props.size}>
      <rect x="3" y="6" width="13" height="12" rx="2" />
      <path d="M16 10l5-3v10l-5-3z" />
    </Stroke>
  );
}

export function ScreenIcon(props: { size?: number }) {
  return (
    <Stroke size={props.size}>
      <rect x="3" y="4" width="18" height="12" rx="2" />
      <path d="M8 20h8M12 16v4M12 13V7M9 10l3-3 3 3" />
    </Stroke>
  );
}

/** A handset going down: leave or hang up. */
export function LeaveIcon(props: { size?: number }) {
  return (
    <Stroke size={props.size}>
      <path d="M3 14c5-5 13-5 18 0l-2 3-4-1v-3a10 10 0 0 0-6 0v3l-4 1z" />
    </Stroke>
  );
}

export function PlusIcon(props: { size?: number }) {
  return (
    <Stroke size={props.size}>
      <path d="M12 5v14M5 12h14" />
    </Stroke>
  );
}

export function CloseIcon(props: { size?: number }) {
  return (
    <Stroke size={props.size}>
      <path d="M6 6l12 12M18 6 6 18" />
    </Stroke>
  );
}

/** Two people: friends. */
export function FriendsIcon(props: { size?: number }) {
  return (
    <Stroke size={props.size}>
      <circle cx="9" cy="8" r="3.5" />
      <path d="M2.5 20a6.5 6.5 0 0 1 13 0" />
      <path d="M16 4.5a3.5 3.5 0 0 1 0 7M18 14a6.5 6.5 0 0 1 3.5 6" />
    </Stroke>
  );
}

/** Hum's mark: three bars of a level meter. */
export function HumIcon(props: { size?: number }) {
  return (
    <Stroke size={props.size}>
      <path d="M6 9v6M12 5v14M18 8v8" />
    </Stroke>
  );
}

