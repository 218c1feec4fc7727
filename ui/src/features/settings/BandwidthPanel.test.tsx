import { cleanup, fireEvent, render, screen, waitFor } from "@testing-library/preact";
import { afterEach, describe, expect, it } from "vitest";
import { BandwidthPanel } from "./BandwidthPanel";
import { defaultBandwidth, fakeBackend, reportFor } from "../../test-support";
import type { BandwidthSettings } from "../../lib/bindings";

afterEach(cleanup);

function renderPanel(s: BandwidthSettings = defaultBandwidth) {
  return render(<BandwidthPanel initial={s} initialReport={reportFor(s)} />);
}

describe("BandwidthPanel", () => {
  it("shows the calculated numbers from the backend", () => {
    fakeBackend();
    renderPanel();
    expect(screen.getByTestId("available").textContent).toBe("5 Mbps");
    expect(screen.getByTestId("relay-rate").textContent).toBe("500 kbps");
    expect(screen.getByTestId("relay-medium").parentElement?.textContent).toContain("1.25 Mbps");
    expect((screen.getByTestId("bandwidth-save") as HTMLButtonElement).disabled).toBe(true);
  });

  it("previews every change, shows errors beside the field and blocks saving", async () => {
    const calls = fakeBackend();
    renderPanel();
    fireEvent.input(screen.getByTestId("total-mbps"), { target: { value: "4" } });
    expect(await screen.findByTestId("error-reserved")).toHaveProperty(
      "textContent",
      "Reserved for other apps is more than your total upload.",
    );
    expect((screen.getByTestId("bandwidth-save") as HTMLButtonElement).disabled).toBe(true);
    const previews = calls.filter((c) => c.cmd === "bandwidth_preview");
    expect((previews.at(-1)?.args.settings as BandwidthSettings).total_upload).toEqual({
      mode: "manual",
      rate: 4_000_000,
    });
  });

  it("saves a valid change", async () => {
    const calls = fakeBackend();
    renderPanel();
    fireEvent.click(screen.getByTestId("relay-high"));
    await waitFor(() => expect(screen.getByTestId("relay-rate").textContent).toBe("2.5 Mbps"));
    fireEvent.change(screen.getByTestId("download-quality"), { target: { value: "480p" } });
    fireEvent.click(screen.getByTestId("bandwidth-save"));
    expect(await screen.findByTestId("bandwidth-status")).toHaveProperty("textContent", "Saved.");
    const saved = calls.find((c) => c.cmd === "bandwidth_save")?.args.settings as BandwidthSettings;
    expect(saved.relay).toEqual({ level: "high" });
    expect(saved.download_quality).toBe("480p");
  });

  it("custom relay sends the typed kbps", async () => {
    const calls = fakeBackend();
    renderPanel();
    fireEvent.click(screen.getByTestId("relay-custom"));
    fireEvent.input(await screen.findByTestId("relay-custom-kbps"), { target: { value: "800" } });
    await waitFor(() => expect(screen.getByTestId("relay-rate").textContent).toBe("800 kbps"));
    const last = calls.filter((c) => c.cmd === "bandwidth_preview").at(-1)?.args.settings as BandwidthSettings;
    expect(last.relay).toEqual({ level: "custom", rate: 800_000 });
  });

  it("shows the measured upload in auto mode and measures again on request", async () => {
    const auto: BandwidthSettings = { ...defaultBandwidth, total_upload: { mode: "auto" } };
    let probe: { rate: number; measured_at_unix_ms: number } | null = null;
    const status = () => ({
      running: true,
      measuring: false,
      relay_cap: 0,
      throttling: false,
      message: null,
      game: null,
      last_probe: probe,
    });
    const withProbe = (s: BandwidthSettings) => {
      const r = reportFor(s);
      if (s.total_upload.mode === "auto" && s.last_probe) {
        r.effective.total = s.last_probe.rate;
        r.effective.total_source = { source: "detected", measured_at_unix_ms: s.last_probe.measured_at_unix_ms };
      }
      return r;
    };
    const calls = fakeBackend({
      budget_status: status,
      bandwidth_preview: (a) => withProbe(a.settings as BandwidthSettings),
      bandwidth_measure: () => {
        probe = { rate: 48_000_000, measured_at_unix_ms: 1_700_000_000_000 };
        return withProbe({ ...auto, last_probe: probe });
      },
    });
    render(<BandwidthPanel initial={auto} initialReport={withProbe(auto)} />);
    expect(screen.getByTestId("total-not-measured")).toBeTruthy();
    const button = (await screen.findByTestId("measure-upload")) as HTMLButtonElement;
    await waitFor(() => expect(button.disabled).toBe(false));
    expect(button.textContent).toBe("Measure now");
    fireEvent.click(button);
    expect((await screen.findByTestId("total-detected-rate")).textContent).toBe("48 Mbps");
    expect(screen.getByTestId("measure-upload").textContent).toBe("Measure again");
    expect(calls.some((c) => c.cmd === "bandwidth_measure")).toBe(true);
    // The measurement is not an edit: nothing to save.
    expect((screen.getByTestId("bandwidth-save") as HTMLButtonElement).disabled).toBe(true);
  });

  it("shows why a measurement failed", async () => {
    fakeBackend({
      bandwidth_measure: () => {
        throw { code: "relay_unavailable", message: "The bandwidth test could not reach the relay: refused" };
      },
    });
    render(<BandwidthPanel initial={{ ...defaultBandwidth, total_upload: { mode: "auto" } }} initialReport={reportFor(defaultBandwidth)} />);
    const button = (await screen.findByTestId("measure-upload")) as HTMLButtonElement;
    await waitFor(() => expect(button.disabled).toBe(false));
    fireEvent.click(button);
    expect((await screen.findByTestId("measure-error")).textContent).toContain("could not reach the relay");
  });
});
