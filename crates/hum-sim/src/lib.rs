//! `hum sim`: run the real `hum-mesh` state machines for N viewers over `hum-netsim`.
//!
//! One root seed (the server) publishes a chunk every `--chunk-ms`; viewers join over the first
//! seconds, get grants from the tracker, fetch, play and relay. Everything is seeded: the same flags
//! give the same report (except `wall_s`). See docs/mesh.md for the results and what they mean.
//!
//! What is simulated and what is not: the mesh logic, verification (real Ed25519 and BLAKE3, over
//! short stand-in payloads; the network is charged the declared chunk size), the network (bottleneck
//! queues, latency, loss, churn). Not simulated: the media itself, WebRTC/SCTP framing (a fixed
//! per-message overhead stands in), and the relay's own signalling traffic (the tracker answers after
//! one RTT).

pub mod layers;
pub mod population;
pub mod report;
mod sim;

use std::path::PathBuf;

pub use report::Report;
pub use sim::{SimConfig, simulate};

/// Flags for `hum sim` (flattened into the `hum` CLI).
#[derive(clap::Args, Debug, Clone)]
pub struct SimArgs {
    /// Number of viewers.
    #[arg(long, default_value_t = 1000)]
    pub viewers: usize,
    /// Stream bitrate, Mbit/s.
    #[arg(long, default_value_t = 4.0)]
    pub bitrate: f64,
    /// Chunk duration, ms (100-500).
    #[arg(long, default_value_t = 250)]
    pub chunk_ms: u64,
    /// Simulated seconds of stream.
    #[arg(long, default_value_t = 60.0)]
    pub duration: f64,
    /// Fraction of the audience that leaves during the run (each replaced by a newcomer).
    #[arg(long, default_value_t = 0.0)]
    pub churn: f64,
    /// Share of departures (churn and `--exodus`) that are announced: the leaver tells the tracker
    /// first, its downstreams are re-seated at once and it keeps serving them until they stop
    /// asking (1 s quiet, 3 s at most) before it goes; the rest vanish (a crash). See docs/mesh.md,
    /// "Leaving".
    #[arg(long, default_value_t = 0.0)]
    pub graceful: f64,
    /// Share of the audience at the top of the mesh (the tracker's shallowest levels, earliest
    /// joiners first) that leaves together at `--exodus-at`; the report's `departure` says what
    /// the stayers lost in the 10 s after.
    #[arg(long, default_value_t = 0.0)]
    pub exodus: f64,
    /// When the `--exodus` leaves, seconds into the run (default: half the duration).
    #[arg(long)]
    pub exodus_at: Option<f64>,
    /// Relay budgets: `default` (realistic mix, see docs/sim-population.md), the presets `optin25`
    /// (three in four relay nothing), `weak` (every relay 0.3-3 Mbit/s), `mobile` (mobile links, high
    /// RTT, 1% loss unless `--loss` is given), `none`, `fixed:MBPS`, or a file of `<relay Mbit/s>
    /// <weight>` lines.
    #[arg(long, default_value = "default")]
    pub upload_dist: String,
    /// Round-trip times: `default`, `fixed:MS`, or a file of `<rtt ms> <weight>` lines.
    #[arg(long, default_value = "default")]
    pub rtt_dist: String,
    /// RNG seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Server mesh egress cap, Mbit/s (default: derived from the population's lower bound).
    #[arg(long)]
    pub server_cap: Option<f64>,
    /// The operator's hard ceiling on server mesh egress, Mbit/s: while viewers starve the root
    /// spends above the cap up to this (default: twice the cap; equal to the cap: never above it).
    #[arg(long)]
    pub server_ceiling: Option<f64>,
    /// Fraction of viewers that serve corrupt chunks.
    #[arg(long, default_value_t = 0.0)]
    pub malicious: f64,
    /// Packet loss on every access link (0-1).
    #[arg(long, default_value_t = 0.0)]
    pub loss: f64,
    /// Viewers join uniformly over this many seconds at the start.
    #[arg(long, default_value_t = 3.0)]
    pub join_window: f64,
    /// Print one JSON object instead of the table. Not a flag of its own: the `hum` CLI has a global
    /// `--json`, and the stand-alone `hum-sim` binary declares one; both set this.
    #[arg(skip)]
    pub json: bool,
    /// Write SVG plots (egress vs time and vs the bound, lag CDF) into this directory.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Run once per audience size in this comma-separated list (e.g. `100,1000,10000,100000`)
    /// instead of `--viewers`; prints one report (or JSON line) each, and with `--plot` also writes
    /// `egress-vs-viewers.svg`.
    #[arg(long)]
    pub sweep: Option<String>,
    /// Publish all four layers (1080p 4.5 / 720p 2 / 480p 0.65 / audio 0.064 Mbit/s; `--bitrate` is
    /// ignored): each viewer watches the layer its download setting and measured throughput allow
    /// and relays what its budget affords. Reports per layer (`layers` in the JSON); the top-level
    /// numbers are totals over the layers. See docs/mesh.md.
    #[arg(long)]
    pub layers: bool,
    /// Many seeds, small slices: viewers fetch each chunk as 16 KiB verified slices, split over up
    /// to this many upstreams (1-3), and forward each slice as soon as it verifies; 0: whole
    /// chunks (store-and-forward, as before). See docs/mesh.md.
    #[arg(long, default_value_t = 0)]
    pub slices: u8,
    /// With `--slices 2` or `3`: when one part of a chunk is in and another has sent nothing, ask
    /// the quick upstream for the late part's slices (`off` leaves late parts to the chunk's
    /// end-game near its deadline; failed parts are re-asked at once either way).
    #[arg(long, default_value = "on", value_parser = ["on", "off"])]
    pub late_part_repair: String,
}

/// Run `hum sim`.
pub fn run(args: SimArgs) -> anyhow::Result<()> {
    let sizes: Vec<usize> = match &args.sweep {
        None => vec![args.viewers],
        Some(list) => list
            .split(',')
            .map(|x| x.trim().parse::<usize>())
            .collect::<Result<_, _>>()
            .map_err(|e| {
                anyhow::anyhow!("--sweep wants a comma-separated list of viewer counts: {e}")
            })?,
    };
    let mut reports = Vec::new();
    for n in sizes {
        let mut a = args.clone();
        a.viewers = n;
        let cfg = SimConfig::from_args(&a)?;
        let rep = if cfg.layered {
            layers::simulate_layers(&cfg)?
        } else {
            simulate(&cfg)?
        };
        let text = if args.json {
            format!("{}\n", serde_json::to_string(&rep.json())?)
        } else {
            rep.table()
        };
        if !emit(&text)? {
            return Ok(());
        }
        if let Some(dir) = &args.plot {
            let sub = if args.sweep.is_some() {
                dir.join(format!("n{n}"))
            } else {
                dir.clone()
            };
            report::write_plots(&sub, &rep)?;
        }
        reports.push(rep);
    }
    if let Some(dir) = &args.plot {
        if reports.len() > 1 {
            report::write_sweep_plot(dir, &reports)?;
        }
        if !args.json {
            emit(&format!("plots written to {}\n", dir.display()))?;
        }
    }
    Ok(())
}

/// Writes to stdout. `Ok(false)` when the reader has gone away (`hum sim | head`): the run stops
/// quietly instead of panicking as `println!` would.
fn emit(text: &str) -> anyhow::Result<bool> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(anyhow::anyhow!("writing the report: {e}")),
    }
}
