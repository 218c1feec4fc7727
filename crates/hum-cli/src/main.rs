//! `hum`: the headless Hum client. Everything a person does in the app has a command here, so
//! bots, demos and tests need nothing else.

mod bench;
mod commands;
mod resolve;
mod stream;
mod video;
mod voice;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "hum",
    version,
    about = "Hum: voice, video and livestreaming where the server is a seed"
)]
pub struct Cli {
    /// The relay's WebSocket URL.
    #[arg(long, global = true, env = "HUM_RELAY", default_value = hum_engine::RelayConfig::DEFAULT_URL)]
    pub relay: String,
    /// The identity file (your key pair). Default: identity.json in Hum's data directory.
    #[arg(long, global = true, env = "HUM_IDENTITY")]
    pub identity: Option<PathBuf>,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create or show your identity (an Ed25519 key pair; the key is your account).
    #[command(subcommand)]
    Identity(commands::IdentityCmd),
    /// Log in to the relay and show your account.
    Whoami,
    /// Change your display name on the relay (and in the identity file).
    SetName { name: String },
    /// Friends: requests (by @handle, link or key), list, presence, your friend link.
    #[command(subcommand, visible_alias = "friend")]
    Friends(commands::FriendsCmd),
    /// Your @handle on the relay: show, set, clear, look one up.
    #[command(subcommand)]
    Handle(commands::HandleCmd),
    /// Servers (communities) and their invites.
    #[command(subcommand)]
    Server(commands::ServerCmd),
    /// Voice channels of a server.
    #[command(subcommand)]
    Channel(commands::ChannelCmd),
    /// Print the relay's events as they arrive (one JSON object per line).
    Events {
        /// Stop after this long (e.g. 30s); default: run until interrupted.
        #[arg(long, value_parser = humantime::parse_duration)]
        duration: Option<std::time::Duration>,
    },
    /// Benchmarks.
    #[command(subcommand)]
    Bench(bench::BenchCmd),
    /// Simulate a livestream mesh of N viewers (the real hum-mesh over hum-netsim).
    Sim(hum_sim::SimArgs),
    /// Voice channels with audio: `hum voice join --server S --channel C --play in.wav --record out.wav`.
    #[command(subcommand)]
    Voice(voice::VoiceCmd),
    /// Call a friend (or `--answer` a call) with audio, and video with --video.
    Call(Box<voice::CallArgs>),
    /// Livestreams: `hum stream start --server S --channel C --source pattern`.
    #[command(subcommand)]
    Stream(stream::StreamCmd),
    /// Watch a livestream headless, relaying it to others; reports lag, continuity, verified chunks.
    Watch(stream::WatchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HUM_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
