import type { Signal } from "@preact/signals";

/**
 * One text field and a submit button in a row: the form behind "add a friend", "create server"
 * and "join by invite". The caller's `onSubmit` does the work (and clears `field` on success).
 */
export function TextSubmitRow(props: {
  field: Signal<string>;
  placeholder: string;
  inputTestId: string;
  button: string;
  buttonTestId: string;
  onSubmit: () => void;
}) {
  const { field } = props;
  return (
    <form
      class="row"
      onSubmit={(e) => {
        e.preventDefault();
        props.onSubmit();
      }}
    >
      <input
        placeholder={props.placeholder}
        data-testid={props.inputTestId}
        value={field.value}
        onInput={(e) => (field.value = e.currentTarget.value)}
      />
      <button type="submit" data-testid={props.buttonTestId}>
        {props.button}
      </button>
    </form>
  );
}
