//! The update check: the relay announces the newest desktop-client release (`client_release`,
//! from its operator's `--client-release` file); the app compares it with its own version and
//! tells the user where to get it. Nothing is downloaded and the app never replaces itself.

use hum_proto::signal::{ErrorCode, ReleaseError, ReleaseInfo, Reply, Request};

use crate::relay::{ClientError, RelayClient};

/// What the check found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpdateStatus {
    /// This app's version.
    pub current: String,
    /// The release the relay announces, if it announces one.
    pub release: Option<ReleaseInfo>,
    /// True when `release` is newer than `current`.
    pub newer: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error("this app's version {0:?} is not a semantic version")]
    Current(String),
    /// The relay's announcement failed the same checks the relay applies to its file.
    #[error("the relay announced an unusable release: {0}")]
    BadRelease(ReleaseError),
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// Compares `current` with what a relay announced. The announcement is outside input: it is
/// checked again here (version, url, notes) and refused with the reason if it is unusable.
pub fn evaluate(current: &str, release: Option<ReleaseInfo>) -> Result<UpdateStatus, UpdateError> {
    let current_v =
        semver::Version::parse(current).map_err(|_| UpdateError::Current(current.to_owned()))?;
    let newer = match &release {
        Some(r) => {
            r.validate().map_err(UpdateError::BadRelease)?;
            r.is_newer_than(&current_v)
                .map_err(UpdateError::BadRelease)?
        }
        None => false,
    };
    Ok(UpdateStatus {
        current: current.to_owned(),
        release,
        newer,
    })
}

/// Asks the connected relay. A relay older than `client_release` answers `bad_request`; that
/// counts as announcing nothing.
pub async fn check(relay: &RelayClient, current: &str) -> Result<UpdateStatus, UpdateError> {
    let release = match relay.request(Request::ClientRelease).await {
        Ok(Reply::ClientRelease { release }) => release,
        Ok(other) => {
            let got = serde_json::to_value(&other)
                .ok()
                .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_owned))
                .unwrap_or_else(|| "?".into());
            return Err(ClientError::UnexpectedReply {
                expected: "client_release",
                got,
            }
            .into());
        }
        Err(e) if e.code() == Some(ErrorCode::BadRequest) => None,
        Err(e) => return Err(e.into()),
    };
    evaluate(current, release)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release(version: &str, url: &str) -> Option<ReleaseInfo> {
        Some(ReleaseInfo {
            version: version.into(),
            url: url.into(),
            notes: None,
        })
    }

    #[test]
    fn newer_older_and_absent_releases() {
        let s = evaluate("0.1.0", release("0.2.0", "https://hum.example/dl")).unwrap();
        assert!(s.newer);
        assert_eq!(s.current, "0.1.0");
        assert!(
            !evaluate("0.2.0", release("0.2.0", "https://x"))
                .unwrap()
                .newer
        );
        assert!(
            !evaluate("0.3.0", release("0.2.0", "https://x"))
                .unwrap()
                .newer
        );
        assert!(
            evaluate("0.2.0-rc.1", release("0.2.0", "https://x"))
                .unwrap()
                .newer
        );
        let none = evaluate("0.1.0", None).unwrap();
        assert!(!none.newer && none.release.is_none());
    }

    #[test]
    fn unusable_announcements_and_versions_are_refused() {
        assert!(matches!(
            evaluate("0.1.0", release("0.2.0", "javascript:alert(1)")),
            Err(UpdateError::BadRelease(ReleaseError::Url))
        ));
        assert!(matches!(
            evaluate("0.1.0", release("latest", "https://x")),
            Err(UpdateError::BadRelease(ReleaseError::Version(..)))
        ));
        assert!(matches!(
            evaluate("dev", None),
            Err(UpdateError::Current(_))
        ));
    }
}
