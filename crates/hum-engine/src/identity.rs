//! A user's identity: an Ed25519 key pair made on first run, plus a display name.
//!
//! The public key *is* the account on every relay: there are no passwords, and the same key
//! always resumes the same account. The file holding the secret key is written with owner-only
//! permissions (0600 on Unix) and replaced atomically, so a crash never leaves half a key.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signer, SigningKey};
use hum_proto::signal::{DisplayName, NameError, bound_login_signing_bytes};
use hum_proto::{Nonce, Signature, UserId};
use serde::{Deserialize, Serialize};

/// Why an identity could not be loaded, created or saved.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("no identity at {0}: create one first (e.g. `hum identity create --name YOUR_NAME`)")]
    Missing(PathBuf),
    #[error("an identity already exists at {0}; refusing to overwrite it (its key is the account)")]
    Exists(PathBuf),
    #[error("cannot read or write identity file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("identity file {path} is damaged: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("invalid display name: {0}")]
    Name(#[from] NameError),
}

/// The on-disk form. Versioned so later fields can be added without breaking old files.
#[derive(Serialize, Deserialize)]
struct IdentityFile {
    version: u32,
    /// The 32-byte Ed25519 secret key, lowercase hex.
    secret_key: String,
    display_name: String,
}

const FILE_VERSION: u32 = 1;

/// A key pair and display name.
#[derive(Clone)]
pub struct Identity {
    key: SigningKey,
    display_name: DisplayName,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret key.
        f.debug_struct("Identity")
            .field("user", &self.user_id())
            .field("display_name", &self.display_name)
            .finish()
    }
}

impl Identity {
    /// A fresh key pair from the operating system's random source.
    pub fn generate(display_name: DisplayName) -> Self {
        let key = SigningKey::generate(&mut rand::rngs::OsRng);
        Identity { key, display_name }
    }

    /// A deterministic identity from a 32-byte seed (tests, benchmarks, bots).
    pub fn from_seed(seed: [u8; 32], display_name: DisplayName) -> Self {
        Identity {
            key: SigningKey::from_bytes(&seed),
            display_name,
        }
    }

    pub fn user_id(&self) -> UserId {
        UserId(self.key.verifying_key().to_bytes())
    }

    pub fn display_name(&self) -> &DisplayName {
        &self.display_name
    }

    pub fn set_display_name(&mut self, name: DisplayName) {
        self.display_name = name;
    }

    /// The signer of this account's livestreams: the account key signs every chunk record, so
    /// viewers verify a stream against the streamer's user id (docs/stream.md).
    pub fn stream_publisher(&self) -> hum_mesh::manifest::Publisher {
        hum_mesh::manifest::Publisher::from_seed(self.key.to_bytes())
    }

    /// This account's key for end-to-end media encryption ([`crate::e2ee`]): agreeing pairwise
    /// secrets with other accounts and signing the media keys sealed for them.
    pub fn e2ee_keys(&self) -> hum_e2ee::LocalKeys {
        hum_e2ee::LocalKeys::new(self.key.clone())
    }

    /// The signature the relay's login challenge asks for, bound to `relay` (the `host[:port]`
    /// we dialed) so that no other relay can use it (docs/security.md, "Login binding").
    pub fn sign_login(&self, relay: &str, nonce: &Nonce) -> Signature {
        Signature(
            self.key
                .sign(&bound_login_signing_bytes(relay, nonce))
                .to_bytes(),
        )
    }

    /// Load an identity file.
    pub fn load(path: &Path) -> Result<Self, IdentityError> {
        let text = match fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(IdentityError::Missing(path.to_path_buf()));
            }
            Err(source) => {
                return Err(IdentityError::Io {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        let corrupt = |reason: String| IdentityError::Corrupt {
            path: path.to_path_buf(),
            reason,
        };
        let file: IdentityFile =
            serde_json::from_str(&text).map_err(|e| corrupt(format!("not valid JSON: {e}")))?;
        if file.version > FILE_VERSION {
            return Err(corrupt(format!(
                "written by a newer Hum (format {}, this one reads up to {FILE_VERSION})",
                file.version
            )));
        }
        tighten_permissions(path);
        let mut seed = [0u8; 32];
        hex::decode_to_slice(file.secret_key.trim(), &mut seed)
            .map_err(|e| corrupt(format!("secret_key is not 64 hex characters: {e}")))?;
        let display_name = DisplayName::new(file.display_name)?;
        Ok(Identity::from_seed(seed, display_name))
    }

    /// Write the identity to `path` with owner-only permissions, atomically.
    pub fn save(&self, path: &Path) -> Result<(), IdentityError> {
        let io = |source| IdentityError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(io)?;
        }
        let file = IdentityFile {
            version: FILE_VERSION,
            secret_key: hex::encode(self.key.to_bytes()),
            display_name: self.display_name.to_string(),
        };
        let text = serde_json::to_string_pretty(&file).unwrap_or_default();
        let tmp = path.with_extension("tmp");
        // A leftover temp file keeps its old mode when reopened: start from a new one.
        match fs::remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        {
            let mut opts = fs::OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600);
            }
            let mut f = opts.open(&tmp).map_err(io)?;
            f.write_all(text.as_bytes()).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        fs::rename(&tmp, path).map_err(io)
    }

    /// Create and save a new identity, refusing to overwrite an existing one unless `force`.
    pub fn create(path: &Path, name: DisplayName, force: bool) -> Result<Self, IdentityError> {
        if path.exists() && !force {
            return Err(IdentityError::Exists(path.to_path_buf()));
        }
        let id = Identity::generate(name);
        id.save(path)?;
        Ok(id)
    }

    /// Load the identity at `path`, or create one with `name` if there is none.
    pub fn load_or_create(path: &Path, name: DisplayName) -> Result<Self, IdentityError> {
        match Identity::load(path) {
            Err(IdentityError::Missing(_)) => Identity::create(path, name, false),
            other => other,
        }
    }
}

/// The key file must be readable by its owner only; fix a file others can read (copied in, or
/// written by an older version) rather than keep using it as it is.
fn tighten_permissions(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            match fs::set_permissions(path, fs::Permissions::from_mode(0o600)) {
                Ok(()) => {
                    tracing::warn!("{} was readable by others; now owner-only", path.display())
                }
                Err(e) => tracing::warn!(
                    "{} is readable by others and could not be fixed: {e}",
                    path.display()
                ),
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Verifier, VerifyingKey};
    use hum_proto::signal::login_signing_bytes;

    fn name(s: &str) -> DisplayName {
        DisplayName::new(s).unwrap()
    }

    #[test]
    fn save_load_round_trip_keeps_the_account() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id.json");
        let a = Identity::create(&path, name("alice"), false).unwrap();
        let b = Identity::load(&path).unwrap();
        assert_eq!(a.user_id(), b.user_id());
        assert_eq!(b.display_name().as_str(), "alice");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        assert!(matches!(
            Identity::create(&path, name("mallory"), false),
            Err(IdentityError::Exists(_))
        ));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
            // A world-readable key file is tightened on load.
            fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
            Identity::load(&path).unwrap();
            assert_eq!(mode(&path), 0o600);
            // A stale, world-readable temp file does not leak its mode into the saved key.
            let tmp = path.with_extension("tmp");
            fs::write(&tmp, "stale").unwrap();
            fs::set_permissions(&tmp, fs::Permissions::from_mode(0o666)).unwrap();
            a.save(&path).unwrap();
            assert_eq!(mode(&path), 0o600);
        }
    }

    #[test]
    fn login_signature_verifies_over_the_domain_separated_bytes() {
        let id = Identity::from_seed([7; 32], name("bot"));
        let nonce = Nonce([3; 32]);
        let sig = id.sign_login("relay.example:9000", &nonce);
        let vk = VerifyingKey::from_bytes(id.user_id().as_bytes()).unwrap();
        let sig = ed25519_dalek::Signature::from_bytes(&sig.0);
        vk.verify(
            &bound_login_signing_bytes("relay.example:9000", &nonce),
            &sig,
        )
        .unwrap();
        // Not valid for another relay, nor as the unbound form, nor over the bare nonce.
        assert!(
            vk.verify(
                &bound_login_signing_bytes("evil.example:9000", &nonce),
                &sig
            )
            .is_err()
        );
        assert!(vk.verify(&login_signing_bytes(&nonce), &sig).is_err());
        assert!(vk.verify(nonce.as_bytes(), &sig).is_err());
    }

    #[test]
    fn damaged_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id.json");
        assert!(matches!(
            Identity::load(&path),
            Err(IdentityError::Missing(_))
        ));
        fs::write(&path, "{not json").unwrap();
        let e = Identity::load(&path).unwrap_err();
        assert!(e.to_string().contains("damaged"), "{e}");
        fs::write(
            &path,
            r#"{"version":1,"secret_key":"zz","display_name":"a"}"#,
        )
        .unwrap();
        assert!(matches!(
            Identity::load(&path),
            Err(IdentityError::Corrupt { .. })
        ));
        fs::write(&path, r#"{"version":9,"secret_key":"","display_name":"a"}"#).unwrap();
        assert!(
            Identity::load(&path)
                .unwrap_err()
                .to_string()
                .contains("newer")
        );
    }
}
