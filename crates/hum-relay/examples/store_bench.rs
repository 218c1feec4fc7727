//! What one write costs the hub thread on each store backend (docs/cluster.md): the same writes
//! through SQLite (a file in a temporary directory, WAL, synchronous=NORMAL) and PostgreSQL (the
//! throwaway server of `hum_relay::store::testing`: Unix socket, fsync off, so this measures the
//! client round trip and the server's work, not the disk), then a full load.
//!
//! ```text
//! cargo run --release -p hum-relay --example store_bench -- 2000
//! #                                                         users (each: upsert, request, friendship, member)
//! ```

use std::time::Instant;

use hum_proto::UserId;
use hum_proto::signal::{DisplayName, Name, Role};
use hum_relay::store::testing::TempPostgres;
use hum_relay::store::{Location, Store};

/// Median and p99 of `samples` (microseconds).
fn quantiles(mut samples: Vec<f64>) -> (f64, f64) {
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99))
}

fn user(i: u32) -> UserId {
    let mut b = [0u8; 32];
    b[..4].copy_from_slice(&i.to_be_bytes());
    b[31] = 1;
    UserId(b)
}

fn run(label: &str, mut s: Store, users: u32) -> anyhow::Result<()> {
    let name = DisplayName::new("bench user")?;
    let owner = user(u32::MAX);
    s.upsert_user(&owner, &name, 1)?;
    let server = s.create_server(&Name::new("bench")?, &owner, 1)?;
    let mut times: Vec<(&str, Vec<f64>)> = vec![
        ("upsert_user", Vec::new()),
        ("add_friend_request", Vec::new()),
        ("add_friendship (tx)", Vec::new()),
        ("add_member", Vec::new()),
    ];
    let started = Instant::now();
    for i in 0..users {
        let u = user(i);
        let t = Instant::now();
        s.upsert_user(&u, &name, 2)?;
        times[0].1.push(t.elapsed().as_secs_f64() * 1e6);
        let t = Instant::now();
        s.add_friend_request(&u, &owner, 3)?;
        times[1].1.push(t.elapsed().as_secs_f64() * 1e6);
        let t = Instant::now();
        s.add_friendship(&u, &owner, 4)?;
        times[2].1.push(t.elapsed().as_secs_f64() * 1e6);
        let t = Instant::now();
        s.add_member(server, &u, Role::Member, 5)?;
        times[3].1.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let writes = started.elapsed();
    let t = Instant::now();
    let m = s.load()?;
    let load = t.elapsed();
    println!(
        "{label}: {} writes in {:.2} s ({:.0}/s); load of {} users {:.0} ms",
        users * 4,
        writes.as_secs_f64(),
        f64::from(users * 4) / writes.as_secs_f64(),
        m.users.len(),
        load.as_secs_f64() * 1e3
    );
    for (op, samples) in times {
        let (p50, p99) = quantiles(samples);
        println!("  {op:<22} p50 {p50:>7.0} us  p99 {p99:>7.0} us");
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let users: u32 = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(2000);
    let dir = tempfile::tempdir()?;
    run("sqlite", Store::open_dir(dir.path())?, users)?;
    let url = TempPostgres::shared()
        .create_database()
        .map_err(anyhow::Error::msg)?;
    run("postgres", Store::open(&Location::Postgres(url))?, users)?;
    Ok(())
}
