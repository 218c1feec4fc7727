import { useSignal } from "@preact/signals";
import { useEffect } from "preact/hooks";
import {
  commands,
  events,
  type BudgetStatus,
  type BandwidthReport,
  type BandwidthSettings,
  type DownloadQuality,
  type FieldError,
  type RelayContribution,
  type SettingsField,
} from "../../lib/bindings";
import { formatRate, messageOf, unwrap } from "../../lib/api";

const MBPS = 1_000_000;
const RELAY_LEVELS = ["off", "low", "medium", "high", "custom"] as const;
type RelayLevel = (typeof RELAY_LEVELS)[number];
const QUALITIES: { value: DownloadQuality; label: string }[] = [
  { value: "auto", label: "Auto" },
  { value: "1080p", label: "1080p" },
  { value: "720p", label: "720p" },
  { value: "480p", label: "480p" },
  { value: "audio_only", label: "Audio only" },
];

function errorsFor(errors: FieldError[], field: SettingsField) {
  return errors
    .filter((e) => e.field === field)
    .map((e) => (
      <p class="error" role="alert" data-testid={`error-${field}`} key={e.code}>
        {e.message}
      </p>
    ));
}

/** Parses a user-typed Mbps value into bps; NaN stays NaN so the backend can refuse it clearly. */
function mbpsToBps(text: string): number {
  const n = Number.parseFloat(text.replace(",", "."));
  return Number.isFinite(n) && n >= 0 ? Math.round(n * MBPS) : 0;
}

/**
 * The bandwidth panel from the design: total upload (auto | manual), reserved for other apps
 * (slider), available (calculated), relay contribution with the resulting rate, download quality.
 * Every change asks the backend (hum-budget) for the numbers and the errors; nothing is computed here.
 */
export function BandwidthPanel(props: { initial: BandwidthSettings; initialReport: BandwidthReport }) {
  const settings = useSignal<BandwidthSettings>(props.initial);
  const report = useSignal<BandwidthReport>(props.initialReport);
  const status = useSignal<string | null>(null);
  const saveError = useSignal<string | null>(null);
  const dirty = useSignal(false);
  const budget = useSignal<BudgetStatus | null>(null);
  const measureError = useSignal<string | null>(null);

  function takeStatus(b: BudgetStatus) {
    budget.value = b;
    const probe = b.last_probe;
    const mine = settings.value.last_probe;
    // A new measurement updates the panel's copy (edits in progress stay).
    if (probe && (!mine || probe.measured_at_unix_ms > mine.measured_at_unix_ms)) {
      settings.value = { ...settings.value, last_probe: probe };
    }
  }

  useEffect(() => {
    unwrap(commands.budgetStatus())
      .then(takeStatus)
      .catch(() => {});
    let unlisten: (() => void) | undefined;
    events.budgetChanged
      .listen((e) => takeStatus(e.payload.status))
      .then((u) => (unlisten = u))
      .catch(() => {});
    return () => unlisten?.();
  }, []);

  async function measure() {
    measureError.value = null;
    budget.value = budget.value ? { ...budget.value, measuring: true } : budget.value;
    try {
      await unwrap(commands.bandwidthMeasure());
    } catch (e) {
      measureError.value = messageOf(e);
    }
    try {
      takeStatus(await unwrap(commands.budgetStatus()));
    } catch {
      // the status event carries it too
    }
  }

  useEffect(() => {
    let stale = false;
    unwrap(commands.bandwidthPreview(settings.value))
      .then((r) => {
        if (!stale) report.value = r;
      })
      .catch((e) => (saveError.value = messageOf(e)));
    return () => {
      stale = true;
    };
  }, [settings.value]);

  function update(patch: Partial<BandwidthSettings>) {
    settings.value = { ...settings.value, ...patch };
    dirty.value = true;
    status.value = null;
    saveError.value = null;
  }

  async function save() {
    try {
      report.value = await unwrap(commands.bandwidthSave(settings.value));
      dirty.value = false;
      status.value = "Saved.";
    } catch (e) {
      saveError.value = messageOf(e);
    }
  }

  const s = settings.value;
  const r = report.value;
  const eff = r.effective;
  const manualTotal = s.total_upload.mode === "manual" ? s.total_upload.rate : null;
  const sliderMax = Math.max(manualTotal ?? eff.total, MBPS);
  const reservedRate = s.reserved.mode === "manual" ? s.reserved.rate : eff.reserved;
  const relayLevel: RelayLevel = s.relay.level;
  const presetRate = (level: RelayLevel) =>
    level === "custom" ? null : eff.relay_presets[level as Exclude<RelayLevel, "custom">];

  return (
    <section class="card" data-testid="bandwidth-panel">
      <h2>Bandwidth</h2>

      <fieldset>
        <legend>Total upload limit</legend>
        <label class="inline">
          <input
            type="radio"
            name="total-mode"
            data-testid="total-auto"
            checked={s.total_upload.mode === "auto"}
            onChange={() => update({ total_upload: { mode: "auto" } })}
          />
          Auto-detect
        </label>
        <label class="inline">
          <input
            type="radio"
            name="total-mode"
            data-testid="total-manual"
            checked={s.total_upload.mode === "manual"}
            onChange={() => update({ total_upload: { mode: "manual", rate: eff.total || 10 * MBPS } })}
          />
          Manual
        </label>
        {manualTotal !== null && (
          <label class="inline">
            <input
              type="number"
              min="0"
              step="0.5"
              data-testid="total-mbps"
              value={manualTotal / MBPS}
              onInput={(e) =>
                update({ total_upload: { mode: "manual", rate: mbpsToBps(e.currentTarget.value) } })
              }
            />
            Mbps
          </label>
        )}
        {s.total_upload.mode === "auto" && eff.total_source.source === "detected" && (
          <p data-testid="total-detected">
            Measured upload: <strong data-testid="total-detected-rate">{formatRate(eff.total)}</strong>{" "}
            <span class="muted">
              (tested {new Date(eff.total_source.measured_at_unix_ms).toLocaleString()} against your relay)
            </span>
          </p>
        )}
        {eff.total_source.source === "not_measured" && (
          <p class="muted" data-testid="total-not-measured">
            Not measured yet: Hum relays nothing until a bandwidth test has run.
          </p>
        )}
        {s.total_upload.mode === "auto" && (
          <div class="actions">
            <button
              class="secondary"
              data-testid="measure-upload"
              disabled={!budget.value?.running || budget.value.measuring}
              title={budget.value?.running ? undefined : "Connect to a relay first"}
              onClick={measure}
            >
              {eff.total_source.source === "detected" ? "Measure again" : "Measure now"}
            </button>
            {budget.value?.measuring && (
              <span class="muted" data-testid="measure-status">
                Measuring your upload (about 4 s)…
              </span>
            )}
          </div>
        )}
        {measureError.value && (
          <p class="error" role="alert" data-testid="measure-error">
            {measureError.value}
          </p>
        )}
        {errorsFor(r.errors, "total_upload")}
      </fieldset>

      <fieldset>
        <legend>Reserved for other apps</legend>
        <label class="inline">
          <input
            type="checkbox"
            data-testid="reserved-auto"
            checked={s.reserved.mode === "auto"}
            onChange={(e) =>
              update({
                reserved: e.currentTarget.checked
                  ? { mode: "auto" }
                  : { mode: "manual", rate: eff.reserved },
              })
            }
          />
          Automatic (what other apps send, plus headroom)
        </label>
        <div class="slider-row">
          <input
            type="range"
            min="0"
            max={sliderMax}
            step={sliderMax / 100}
            data-testid="reserved-slider"
            disabled={s.reserved.mode === "auto"}
            value={reservedRate}
            onInput={(e) =>
              update({ reserved: { mode: "manual", rate: Math.round(Number(e.currentTarget.value)) } })
            }
          />
          <span data-testid="reserved-value">{formatRate(reservedRate)}</span>
        </div>
        {errorsFor(r.errors, "reserved")}
      </fieldset>

      <p class="calculated">
        Available for Hum: <strong data-testid="available">{formatRate(eff.available)}</strong>
      </p>

      <fieldset>
        <legend>Relay contribution</legend>
        <p class="muted">Upload you lend to other viewers of a livestream. Off by default.</p>
        <div class="choices">
          {RELAY_LEVELS.map((level) => {
            const rate = presetRate(level);
            return (
              <label class="inline" key={level}>
                <input
                  type="radio"
                  name="relay"
                  data-testid={`relay-${level}`}
                  checked={relayLevel === level}
                  onChange={() => {
                    const next: RelayContribution =
                      level === "custom"
                        ? { level: "custom", rate: eff.relay || 500_000 }
                        : { level };
                    update({ relay: next });
                  }}
                />
                {level[0].toUpperCase() + level.slice(1)}
                {rate !== null && <span class="muted"> ({formatRate(rate)})</span>}
              </label>
            );
          })}
        </div>
        {s.relay.level === "custom" && (
          <label class="inline">
            <input
              type="number"
              min="0"
              step="50"
              data-testid="relay-custom-kbps"
              value={s.relay.rate / 1000}
              onInput={(e) => {
                const kbps = Number.parseFloat(e.currentTarget.value);
                update({
                  relay: { level: "custom", rate: Number.isFinite(kbps) && kbps > 0 ? Math.round(kbps * 1000) : 0 },
                });
              }}
            />
            kbps
          </label>
        )}
        <p>
          Relaying: <strong data-testid="relay-rate">{formatRate(eff.relay)}</strong>
          {eff.conservative && <span class="muted"> (capped at Low while a game runs)</span>}
        </p>
        {budget.value?.throttling && (
          <p class="muted" data-testid="throttle-state">
            Protection: relay allowed {formatRate(budget.value.relay_cap)} now
            {budget.value.relay_cap < eff.relay ? " (reduced while your connection is busy)" : ""}.
          </p>
        )}
        {budget.value?.message && (
          <p class="warning" data-testid="budget-message">
            {budget.value.message}
          </p>
        )}
        {errorsFor(r.errors, "relay")}
      </fieldset>

      <fieldset>
        <legend>Download quality</legend>
        <select
          data-testid="download-quality"
          value={s.download_quality}
          onChange={(e) => update({ download_quality: e.currentTarget.value as DownloadQuality })}
        >
          {QUALITIES.map((q) => (
            <option value={q.value} key={q.value}>
              {q.label}
            </option>
          ))}
        </select>
      </fieldset>

      {errorsFor(r.errors, "protection")}
      {r.effective.warnings.map((w) => (
        <p class="warning" key={w.code}>
          {w.message}
        </p>
      ))}
      {saveError.value && (
        <p class="error" role="alert" data-testid="bandwidth-save-error">
          {saveError.value}
        </p>
      )}
      <div class="actions">
        <button
          data-testid="bandwidth-save"
          disabled={!dirty.value || r.errors.length > 0}
          onClick={save}
        >
          Save
        </button>
        {status.value && <span data-testid="bandwidth-status">{status.value}</span>}
      </div>
    </section>
  );
}
