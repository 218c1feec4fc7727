import { cleanup, fireEvent, render, screen, waitFor } from "@testing-library/preact";
import { afterEach, describe, expect, it } from "vitest";
import { DesktopPanel } from "./DesktopPanel";
import { fakeBackend } from "../../test-support";
import type { DesktopSettings } from "../../lib/bindings";

afterEach(cleanup);

describe("DesktopPanel", () => {
  it("turns start on login on, and offers close to tray only with a tray", async () => {
    let saved: DesktopSettings = { start_on_login: false, close_to_tray: false };
    const calls = fakeBackend({
      desktop_settings_get: () => ({ settings: saved, tray: false, autostart_error: null }),
      desktop_settings_set: (a) => {
        saved = a.settings as DesktopSettings;
        return { settings: saved, tray: false, autostart_error: null };
      },
    });
    render(<DesktopPanel />);
    const login = (await screen.findByTestId("start-on-login")) as HTMLInputElement;
    expect(login.checked).toBe(false);
    expect((screen.getByTestId("close-to-tray") as HTMLInputElement).disabled).toBe(true);
    expect(screen.getByTestId("no-tray").textContent).toContain("closing the window quits Hum");
    fireEvent.click(login);
    await waitFor(() => expect(saved.start_on_login).toBe(true));
    expect(calls.find((c) => c.cmd === "desktop_settings_set")?.args).toEqual({
      settings: { start_on_login: true, close_to_tray: false },
    });
    await waitFor(() => expect((screen.getByTestId("start-on-login") as HTMLInputElement).checked).toBe(true));
  });

  it("shows why a change failed and keeps the last saved state", async () => {
    fakeBackend({
      desktop_settings_get: () => ({
        settings: { start_on_login: false, close_to_tray: false },
        tray: true,
        autostart_error: null,
      }),
      desktop_settings_set: () => {
        throw { code: "storage", message: "Could not change starting Hum at login: read-only file system" };
      },
    });
    render(<DesktopPanel />);
    fireEvent.click(await screen.findByTestId("close-to-tray"));
    expect((await screen.findByTestId("desktop-error")).textContent).toContain("read-only file system");
    expect((screen.getByTestId("close-to-tray") as HTMLInputElement).checked).toBe(false);
  });
});
