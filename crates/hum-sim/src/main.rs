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
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut args = cli.sim;
    args.json = cli.json;
    hum_sim::run(args)
}
