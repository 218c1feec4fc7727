//! Harness for the voice end-to-end tests: a real relay, identities and a server with a voice
//! channel set up with the `hum` CLI, and `hum voice join` processes whose JSON events and WAV
//! recordings the tests inspect.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hum_media::synth::{chirp_samples, write_wav};
use serde_json::Value;

use crate::relay::Relay;
use crate::{KillOnDrop, workspace_bin};

/// Voice tests run one at a time, also across test files run by one `cargo test` (each file is
/// its own process, so this only serialises within a file): each test is several real-time
/// processes, and on a small shared machine running them in parallel starves the audio threads.
pub static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A relay, identities `id{i}.json`, and (after [`World::create_server`]) a server "Guild" with
/// a voice channel "Lounge" and an invite code.
pub struct World {
    _serial: std::sync::MutexGuard<'static, ()>,
    pub relay: Relay,
    pub url: String,
    pub hum: PathBuf,
    pub dir: tempfile::TempDir,
    pub users: Vec<String>,
    pub invite: String,
    /// The local address `hum voice join` binds its media to (`--bind`): the relay's IP, port 0.
    pub bind: String,
}

impl World {
    /// A relay, a server "Guild" with a voice channel "Lounge", `n` members with identities, and
    /// one more member (index `n`) who only observes (a second login with a participant's key
    /// would replace that participant's session).
    pub fn new(n: usize) -> Result<World> {
        World::with_relay_args(n, &[])
    }

    /// [`World::new`] with extra `hum-relay` arguments (e.g. `--mesh-limit 0`).
    pub fn with_relay_args(n: usize, relay_args: &[&str]) -> Result<World> {
        let mut w = World::empty_with(relay_args)?;
        w.create_users(n + 1)?;
        w.create_server(0)?;
        for i in 1..=n {
            w.join_server(i)?;
        }
        Ok(w)
    }

    /// Just the relay (and the serial lock).
    pub fn empty() -> Result<World> {
        World::empty_with(&[])
    }

    /// Just the relay, started with extra arguments.
    pub fn empty_with(relay_args: &[&str]) -> Result<World> {
        World::empty_at("127.0.0.1:0", relay_args)
    }

    /// [`World::with_relay_args`] with the relay (and its SFU) listening on `listen` (e.g. a
    /// veth address that processes in a network namespace reach); media binds to its IP.
    pub fn with_relay_at(n: usize, listen: &str, relay_args: &[&str]) -> Result<World> {
        let mut w = World::empty_at(listen, relay_args)?;
        w.create_users(n + 1)?;
        w.create_server(0)?;
        for i in 1..=n {
            w.join_server(i)?;
        }
        Ok(w)
    }

    /// Just the relay, listening on `listen`, started with extra arguments.
    pub fn empty_at(listen: &str, relay_args: &[&str]) -> Result<World> {
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir()?;
        let relay = Relay::start_at(&dir.path().join("relay"), listen, relay_args)?;
        let url = relay.ws_url();
        let bind = format!("{}:0", relay.addr.ip());
        let hum = workspace_bin("hum-cli", "hum")?;
        Ok(World {
            _serial: serial,
            relay,
            url,
            hum,
            dir,
            users: Vec::new(),
            invite: String::new(),
            bind,
        })
    }

    /// Creates `n` more identities (`id{i}.json`, logged in once so the relay knows them).
    pub fn create_users(&mut self, n: usize) -> Result<()> {
        for _ in 0..n {
            let i = self.users.len();
            let v = self.run(i, &["identity", "create", "--name", &format!("user{i}")])?;
            self.users
                .push(v["user"].as_str().context("user id")?.to_string());
        }
        Ok(())
    }

    /// User `owner` creates server "Guild", an invite and voice channel "Lounge".
    pub fn create_server(&mut self, owner: usize) -> Result<()> {
        self.run(owner, &["server", "create", "Guild"])?;
        let invite = self.run(owner, &["server", "invite", "Guild"])?;
        self.invite = invite["code"].as_str().context("invite code")?.to_string();
        self.run(owner, &["channel", "create", "--server", "Guild", "Lounge"])?;
        Ok(())
    }

    /// User `i` joins the server with the invite.
    pub fn join_server(&self, i: usize) -> Result<()> {
        self.run(i, &["server", "join", &self.invite])?;
        Ok(())
    }

    pub fn identity(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("id{i}.json"))
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn cmd(&self, i: usize, args: &[&str]) -> Command {
        self.cmd_via(&[], i, args)
    }

    /// [`World::cmd`] run through a wrapper command (e.g. `ip netns exec NS`).
    pub fn cmd_via(&self, wrapper: &[&str], i: usize, args: &[&str]) -> Command {
        let mut c = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(&self.hum);
                c
            }
            None => Command::new(&self.hum),
        };
        c.arg("--relay")
            .arg(&self.url)
            .arg("--identity")
            .arg(self.identity(i))
            .arg("--json")
            .args(args)
            // HUM_TEST_LOG=debug (or a filter) shows the processes' logs when a test fails.
            .env(
                "HUM_LOG",
                std::env::var("HUM_TEST_LOG").unwrap_or_else(|_| "error".into()),
            );
        c
    }

    /// Runs a command to completion; returns its JSON output.
    pub fn run(&self, i: usize, args: &[&str]) -> Result<Value> {
        let out = self.cmd(i, args).output().context("running hum")?;
        if !out.status.success() {
            bail!(
                "hum {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        serde_json::from_slice(&out.stdout).with_context(|| {
            format!(
                "hum {args:?} printed {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// Starts `hum voice join` for user `i`; stdout (JSON events) goes to `events{i}.jsonl`.
    pub fn voice(&self, i: usize, extra: &[&str]) -> Result<KillOnDrop> {
        self.voice_via(&[], &self.bind, i, extra)
    }

    /// [`World::voice`] run through a wrapper command (`ip netns exec NS`), its media bound to
    /// `bind`.
    pub fn voice_via(
        &self,
        wrapper: &[&str],
        bind: &str,
        i: usize,
        extra: &[&str],
    ) -> Result<KillOnDrop> {
        let log = std::fs::File::create(self.path(&format!("events{i}.jsonl")))?;
        let mut args = vec![
            "voice",
            "join",
            "--server",
            "Guild",
            "--channel",
            "Lounge",
            "--bind",
            bind,
        ];
        args.extend_from_slice(extra);
        let child = self
            .cmd_via(wrapper, i, &args)
            .stdout(log)
            .stderr(Stdio::inherit())
            .spawn()
            .context("spawning hum voice join")?;
        Ok(KillOnDrop(child))
    }

    /// The JSON events user `i`'s `hum voice join` printed so far.
    pub fn events(&self, i: usize) -> Vec<Value> {
        std::fs::read_to_string(self.path(&format!("events{i}.jsonl")))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The channel's roster, as the last user (the observer) sees it.
    pub fn roster(&self) -> Result<Vec<Value>> {
        let observer = self.users.len() - 1;
        let channels = self.run(observer, &["channel", "list", "--server", "Guild"])?;
        Ok(channels[0]["roster"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }
}

/// Waits for a process to exit successfully.
pub fn wait_exit(p: &mut KillOnDrop, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = p.0.try_wait()? {
            if !status.success() {
                bail!("process exited with {status}");
            }
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("process did not finish within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls `f` every 100 ms until it says yes.
pub fn wait_for(what: &str, within: Duration, mut f: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if f()? {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("timed out waiting for {what}")
}

/// A path as a command-line argument.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap_or_default()
}

/// Writes a 0.5 s chirp (300-3400 Hz) every 1.5 s, for 9 s; returns the chirp.
pub fn chirp_file(path: &Path) -> Result<Vec<f32>> {
    let chirp = chirp_samples(300.0, 3400.0, 0.5, 24_000);
    let mut sig = Vec::new();
    for _ in 0..6 {
        sig.extend_from_slice(&chirp);
        sig.extend(std::iter::repeat_n(0.0, 48_000));
    }
    write_wav(path, &sig)?;
    Ok(chirp)
}

/// Writes one second of a sine (loop it with `--play FILE --loop`): a tone quieter than
/// `--tone`'s 0.3, so that several of them mix without clipping.
pub fn tone_file(path: &Path, hz: f32, amplitude: f32) -> Result<()> {
    write_wav(path, &hum_media::synth::tone_samples(hz, amplitude, 48_000))?;
    Ok(())
}

/// The share (0..=1) of 100 ms blocks of `samples` in which `hz` holds more than `min_purity`
/// of the energy. Judged per block because a jitter buffer dropping or concealing one frame
/// shifts the tone's phase: over a long window the two sides of such a jump can cancel each
/// other's Goertzel power although the tone is plainly there; per block it costs one block.
pub fn tone_share(samples: &[f32], hz: f32, min_purity: f32) -> f32 {
    let blocks: Vec<&[f32]> = samples.chunks_exact(4_800).collect();
    let good = blocks
        .iter()
        .filter(|b| hum_media::analysis::tone_purity(b, hz) > min_purity)
        .count();
    good as f32 / blocks.len().max(1) as f32
}
