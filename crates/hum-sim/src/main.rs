//! Stand-alone `hum-sim` (the same flags as `hum sim`).

use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "hum-sim",
    about = "Simulate the Hum livestream mesh for N viewers"
)]
struct Cli {
    #[command(flatten)]
    sim: hum_sim::SimArgs,
}

fn main() -> anyhow::Result<()> {
    hum_sim::run(Cli::parse().sim)
}
