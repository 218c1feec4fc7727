//! One running app per data directory. A second launch (the user clicking the launcher again, or
//! the desktop opening a `hum://` link, which starts `hum-app hum://invite/CODE`) hands its
//! arguments to the running instance over a Unix socket in the data directory and exits, so the
//! link opens in the window the user already has.
//!
//! Keyed on the data directory, not on the app's name: two people (or a test) running with two
//! `HUM_DATA_DIR`s get two independent apps, and no D-Bus session is needed. The socket is
//! owner-only (0600). A socket left behind by a crash is detected (nobody answers) and replaced.
//! What arrives is outside input: bounded in size, parsed as JSON, and only handed on as strings;
//! the app acts on a link only after the user confirms it.
//!
//! Not on Windows yet: [`acquire`] there always makes the caller the primary instance.

use std::path::{Path, PathBuf};
use std::sync::mpsc;

/// The socket's file name in the data directory.
pub const SOCKET_NAME: &str = "hum-app.sock";
/// Largest message a second instance may send (its whole argument list as JSON).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Why the single-instance socket could not be set up. The app runs anyway (it just cannot
/// receive links from later launches) and says so in its log.
#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    #[error("single-instance socket {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Who this process is.
pub enum Instance {
    /// No other instance runs for this data directory: carry on. `incoming` yields the argument
    /// lists of later launches.
    Primary(Primary),
    /// Another instance runs and has received our arguments: exit.
    Forwarded,
}

/// The running instance's end: later launches' arguments, and the socket.
pub struct Primary {
    pub incoming: mpsc::Receiver<Vec<String>>,
    /// Removes the socket when dropped (keep it for as long as the app runs).
    pub guard: SocketGuard,
}

/// Owns the socket file; dropping it removes the file, so later launches start fresh.
pub struct SocketGuard {
    #[cfg(unix)]
    path: PathBuf,
}

#[cfg(unix)]
impl Drop for SocketGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Forward {
    args: Vec<String>,
}

/// Become the instance for `dir`, or hand `args` to the one that already is.
pub fn acquire(dir: &Path, args: &[String]) -> Result<Instance, InstanceError> {
    imp::acquire(dir, args)
}

#[cfg(unix)]
mod imp {
    use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::net::{UnixListener, UnixStream};
    use std::path::Path;
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    const IO_TIMEOUT: Duration = Duration::from_secs(3);

    pub fn acquire(dir: &Path, args: &[String]) -> Result<Instance, InstanceError> {
        let path = dir.join(SOCKET_NAME);
        let err = |source| InstanceError::Io {
            path: path.clone(),
            source,
        };
        // Two tries: a launch racing another launch may lose the bind and then find the winner.
        for _ in 0..2 {
            if forward(&path, args).is_ok() {
                return Ok(Instance::Forwarded);
            }
            // Nobody answered: a socket file left by a crash, or none at all.
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(err(e)),
            }
            match UnixListener::bind(&path) {
                Ok(listener) => {
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                        .map_err(err)?;
                    let (tx, rx) = mpsc::channel();
                    std::thread::Builder::new()
                        .name("hum-instance".into())
                        .spawn(move || serve(listener, tx))
                        .map_err(err)?;
                    return Ok(Instance::Primary(Primary {
                        incoming: rx,
                        guard: SocketGuard { path },
                    }));
                }
                Err(e) if e.kind() == ErrorKind::AddrInUse => continue,
                Err(e) => return Err(err(e)),
            }
        }
        Err(err(std::io::Error::new(
            ErrorKind::AddrInUse,
            "another launch holds the socket but does not answer",
        )))
    }

    /// Send our arguments; Ok only when the running instance confirmed it took them.
    fn forward(path: &Path, args: &[String]) -> std::io::Result<()> {
        let mut s = UnixStream::connect(path)?;
        s.set_read_timeout(Some(IO_TIMEOUT))?;
        s.set_write_timeout(Some(IO_TIMEOUT))?;
        let mut msg = serde_json::to_vec(&Forward {
            args: args.to_vec(),
        })
        .map_err(std::io::Error::other)?;
        if msg.len() > MAX_MESSAGE_BYTES {
            return Err(std::io::Error::new(
                ErrorKind::InvalidInput,
                "arguments too long to forward",
            ));
        }
        msg.push(b'\n');
        s.write_all(&msg)?;
        let mut reply = String::new();
        BufReader::new(s.take(256)).read_line(&mut reply)?;
        if reply.trim() == "ok" {
            Ok(())
        } else {
            Err(std::io::Error::other(format!(
                "running instance refused: {}",
                reply.trim()
            )))
        }
    }

    fn serve(listener: UnixListener, tx: mpsc::Sender<Vec<String>>) {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            match receive(&conn) {
                Ok(args) => {
                    let _ = (&conn).write_all(b"ok\n");
                    if tx.send(args).is_err() {
                        return; // the app is gone
                    }
                }
                Err(e) => {
                    tracing::warn!("single-instance socket: refused a message: {e}");
                    let _ = (&conn).write_all(format!("error: {e}\n").as_bytes());
                }
            }
        }
    }

    fn receive(conn: &UnixStream) -> std::io::Result<Vec<String>> {
        conn.set_read_timeout(Some(IO_TIMEOUT))?;
        conn.set_write_timeout(Some(IO_TIMEOUT))?;
        let mut line = Vec::new();
        BufReader::new(conn.take(MAX_MESSAGE_BYTES as u64 + 1)).read_until(b'\n', &mut line)?;
        if line.len() > MAX_MESSAGE_BYTES {
            return Err(std::io::Error::new(
                ErrorKind::InvalidData,
                "message too long",
            ));
        }
        let msg: Forward = serde_json::from_slice(&line)
            .map_err(|e| std::io::Error::new(ErrorKind::InvalidData, e))?;
        Ok(msg.args)
    }
}

#[cfg(not(unix))]
mod imp {
    use super::*;

    pub fn acquire(_dir: &Path, _args: &[String]) -> Result<Instance, InstanceError> {
        let (_tx, rx) = mpsc::channel();
        Ok(Instance::Primary(Primary {
            incoming: rx,
            guard: SocketGuard {},
        }))
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::io::{Read, Write};
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::net::UnixStream;
    use std::time::Duration;

    use super::*;

    fn primary(dir: &Path) -> Primary {
        match acquire(dir, &[]).expect("acquire") {
            Instance::Primary(p) => p,
            Instance::Forwarded => panic!("expected to be the first instance"),
        }
    }

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_second_launch_hands_its_arguments_to_the_first_and_a_third_too() {
        let dir = tempfile::tempdir().unwrap();
        let first = primary(dir.path());
        let mode = std::fs::metadata(dir.path().join(SOCKET_NAME))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        for link in ["hum://invite/Ab12Cd34", "hum://friend/@ada"] {
            let sent = args(&["--flag", link]);
            assert!(matches!(
                acquire(dir.path(), &sent).unwrap(),
                Instance::Forwarded
            ));
            let got = first
                .incoming
                .recv_timeout(Duration::from_secs(10))
                .unwrap();
            assert_eq!(got, sent);
        }
    }

    #[test]
    fn a_socket_left_by_a_crash_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SOCKET_NAME);
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists(), "the dead socket file stays behind");
        let first = primary(dir.path());
        assert!(matches!(
            acquire(dir.path(), &args(&["x"])).unwrap(),
            Instance::Forwarded
        ));
        assert_eq!(
            first
                .incoming
                .recv_timeout(Duration::from_secs(10))
                .unwrap(),
            args(&["x"])
        );
        drop(first);
        assert!(!path.exists(), "the primary removes its socket on drop");
        let _again = primary(dir.path());
    }

    #[test]
    fn garbage_and_oversized_messages_are_refused_and_the_socket_keeps_working() {
        let dir = tempfile::tempdir().unwrap();
        let first = primary(dir.path());
        let path = dir.path().join(SOCKET_NAME);
        let send = |bytes: &[u8]| {
            let mut s = UnixStream::connect(&path).unwrap();
            let _ = s.write_all(bytes);
            let _ = s.shutdown(std::net::Shutdown::Write);
            let mut reply = String::new();
            let _ = s.read_to_string(&mut reply);
            reply
        };
        assert!(send(b"not json\n").starts_with("error:"));
        assert!(send(b"{\"args\": 5}\n").starts_with("error:"));
        let huge = vec![b'a'; MAX_MESSAGE_BYTES + 10];
        assert!(send(&huge).starts_with("error:"));
        assert!(
            first.incoming.try_recv().is_err(),
            "nothing bad was handed on"
        );
        assert!(matches!(
            acquire(dir.path(), &args(&["ok"])).unwrap(),
            Instance::Forwarded
        ));
        assert_eq!(
            first
                .incoming
                .recv_timeout(Duration::from_secs(10))
                .unwrap(),
            args(&["ok"])
        );
    }
}
