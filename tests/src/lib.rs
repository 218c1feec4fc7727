//! Harness for Hum's end-to-end tests: find (and if needed build) the workspace binaries, and
//! start real processes that are killed when the test ends.

pub mod relay;

use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::Mutex;

use anyhow::{Context, Result, bail};

/// Binaries already built by this test process: cargo is asked once per binary, not per use.
static BUILT: Mutex<Vec<(String, PathBuf)>> = Mutex::new(Vec::new());

/// The directory cargo put this test binary's sibling executables in (`target/<profile>`).
pub fn target_profile_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("current_exe")?;
    // target/<profile>/deps/<test-binary>
    let deps = exe.parent().context("test binary has no parent dir")?;
    Ok(deps.parent().context("deps dir has no parent")?.to_path_buf())
}

/// Path to workspace binary `bin` from package `package`, building it first if it is missing.
/// Cargo only builds binaries of the package under test, so other packages' binaries are built here.
pub fn workspace_bin(package: &str, bin: &str) -> Result<PathBuf> {
    let path = target_profile_dir()?.join(bin);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, p)) = built.iter().find(|(b, _)| b == bin) {
        return Ok(p.clone());
    }
    let release = target_profile_dir()?.file_name().is_some_and(|n| n == "release");
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args(["build", "-q", "-p", package, "--bin", bin]);
    if release {
        cmd.arg("--release");
    }
    // Ask cargo once per test process: a no-op when the binary is fresh, a rebuild when stale.
    let status = cmd.status().with_context(|| format!("running cargo build for {bin}"))?;
    if !status.success() || !path.exists() {
        bail!("could not build {bin} from package {package}");
    }
    built.push((bin.to_owned(), path.clone()));
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
