import { cleanup, fireEvent, render, screen } from "@testing-library/preact";
import { afterEach, describe, expect, it } from "vitest";
import { App } from "./App";
import { alice, fakeBackend } from "./test-support";

afterEach(cleanup);

describe("App", () => {
  it("starts on first run without an identity, then opens the main screen", async () => {
    fakeBackend();
    render(<App />);
    fireEvent.input(await screen.findByTestId("display-name"), { target: { value: "alice" } });
    fireEvent.click(screen.getByTestId("create-identity"));
    expect(await screen.findByTestId("me")).toHaveProperty("textContent", "Aalice");
  });

  it("opens settings with the identity's public key", async () => {
    fakeBackend({ identity_get: () => alice });
    render(<App />);
    fireEvent.click(await screen.findByTestId("nav-settings"));
    expect(await screen.findByTestId("public-key")).toHaveProperty("textContent", alice.public_key);
    expect(screen.getByTestId("bandwidth-panel")).toBeTruthy();
    expect(screen.getByTestId("voice-panel")).toBeTruthy();
  });
});
