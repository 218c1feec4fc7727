//! Harness for Hum's end-to-end tests: find (and if needed build) the workspace binaries, and
//! start real processes that are killed when the test ends.

pub mod proxy;
pub mod relay;
pub mod stream;
pub mod talker;
pub mod video;
pub mod voice;

use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::Mutex;

use anyhow::{Context, Result, bail};

/// Whether this test process has built the workspace's binaries yet.
static BUILT: Mutex<bool> = Mutex::new(false);

/// The directory cargo put this test binary's sibling executables in (`target/<profile>`).
pub fn target_profile_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("current_exe")?;
    // target/<profile>/deps/<test-binary>
    let deps = exe.parent().context("test binary has no parent dir")?;
    Ok(deps
        .parent()
        .context("deps dir has no parent")?
        .to_path_buf())
}

/// Path to workspace binary `bin` from package `package`, building the workspace's binaries first.
///
/// Cargo only builds the binaries of the package under test, so the others are built here, once
/// per test process, with `cargo build --workspace --bins`: the same feature set as scripts/test's
/// build step, so it is a no-op there instead of a second compile of half the dependency tree.
pub fn workspace_bin(package: &str, bin: &str) -> Result<PathBuf> {
    let dir = target_profile_dir()?;
    let path = dir.join(bin);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if !*built {
        let release = dir.file_name().is_some_and(|n| n == "release");
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.args(["build", "-q", "--workspace", "--bins"]);
        if release {
            cmd.arg("--release");
        }
        let status = cmd
            .status()
            .context("running cargo build --workspace --bins")?;
        if !status.success() {
            bail!("cargo build --workspace --bins failed (needed for {bin} from {package})");
        }
        *built = true;
    }
    if !path.exists() {
        bail!(
            "{} does not exist after building package {package}",
            path.display()
        );
    }
    Ok(path)
}

/// A child process that is killed when dropped, so a failing test never leaks servers.
#[derive(Debug)]
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
