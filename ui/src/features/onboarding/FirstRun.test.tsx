import { fireEvent, render, screen, waitFor } from "@testing-library/preact";
import { afterEach, describe, expect, it, vi } from "vitest";
import { cleanup } from "@testing-library/preact";
import { FirstRun } from "./FirstRun";
import { fakeBackend } from "../../test-support";

afterEach(cleanup);

describe("FirstRun", () => {
  it("shows the backend's message when the name is refused", async () => {
    fakeBackend({
      identity_create: () => {
        throw { code: "invalid_input", message: "Display name must not be empty." };
      },
    });
    const onDone = vi.fn();
    render(<FirstRun defaultRelay="ws://127.0.0.1:7700/ws" onDone={onDone} />);
    fireEvent.click(screen.getByTestId("create-identity"));
    expect(await screen.findByRole("alert")).toHaveProperty("textContent", "Display name must not be empty.");
    expect(onDone).not.toHaveBeenCalled();
  });

  it("saves the relay, creates the identity and hands it on", async () => {
    const calls = fakeBackend();
    const onDone = vi.fn();
    render(<FirstRun defaultRelay="ws://127.0.0.1:7700/ws" onDone={onDone} />);
    expect((screen.getByTestId("relay-url") as HTMLInputElement).value).toBe("ws://127.0.0.1:7700/ws");
    fireEvent.input(screen.getByTestId("display-name"), { target: { value: "alice" } });
    fireEvent.click(screen.getByTestId("create-identity"));
    await waitFor(() => expect(onDone).toHaveBeenCalledOnce());
    expect(onDone.mock.calls[0][0].display_name).toBe("alice");
    expect(calls.map((c) => c.cmd)).toEqual(["relay_url_set", "identity_create"]);
    expect(calls[0].args).toEqual({ url: "ws://127.0.0.1:7700/ws" });
  });
});
