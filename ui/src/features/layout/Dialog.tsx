import type { ComponentChildren } from "preact";
import { useEffect } from "preact/hooks";
import { CloseIcon } from "../voice/icons";

/** Calls `onClose` when Escape is pressed while the component is mounted. */
export function useEscape(onClose: () => void) {
  useEffect(() => {
    const onKey = (e: KeyboardEvent) => e.key === "Escape" && onClose();
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }, [onClose]);
}

/**
 * A modal dialog over the app: a title, a close button (`${testId}-close`), Escape or a click on
 * the backdrop closes it.
 */
export function Dialog(props: { title: string; testId: string; onClose: () => void; children: ComponentChildren }) {
  useEscape(props.onClose);
  return (
    <div class="backdrop" onClick={(e) => e.target === e.currentTarget && props.onClose()}>
      <div class="dialog" role="dialog" aria-modal="true" aria-label={props.title} data-testid={props.testId}>
        <header class="dialog-head">
          <h2>{props.title}</h2>
          <button class="ghost icon-button" aria-label="Close" data-testid={`${props.testId}-close`} onClick={props.onClose}>
            <CloseIcon />
          </button>
        </header>
        {props.children}
      </div>
    </div>
  );
}
