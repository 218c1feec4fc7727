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
