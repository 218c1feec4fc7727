//! Turning what a person types (a name or a number) into the relay's ids.

use anyhow::{Context, Result, anyhow, bail};
use hum_engine::RelayClient;
use hum_proto::links::{self, PersonRef};
use hum_proto::signal::{ChannelInfo, Permissions, ServerSummary};
use hum_proto::{ChannelId, InviteCode, ServerId, UserId};

/// A server by id or by exact name (among the servers you are a member of).
pub async fn server(client: &RelayClient, spec: &str) -> Result<ServerSummary> {
    let servers = client.servers().await.context("listing your servers")?;
    if let Ok(n) = spec.parse::<u64>()
        && let Some(s) = servers.iter().find(|s| s.id == ServerId(n))
    {
        return Ok(s.clone());
    }
    let matches: Vec<_> = servers.iter().filter(|s| s.name.as_str() == spec).collect();
    match matches.as_slice() {
        [one] => Ok((*one).clone()),
        [] => bail!("you are not a member of a server named or numbered `{spec}`"),
        many => bail!(
            "{} of your servers are named `{spec}`: use its number ({})",
            many.len(),
            many.iter()
                .map(|s| s.id.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// A voice channel of `server` by id or exact name.
pub async fn channel(client: &RelayClient, server: ServerId, spec: &str) -> Result<ChannelInfo> {
    let channels = client.channels(server).await.context("listing channels")?;
    if let Ok(n) = spec.parse::<u64>()
        && let Some(c) = channels.iter().find(|c| c.id == ChannelId(n))
    {
        return Ok(c.clone());
    }
    let matches: Vec<_> = channels
        .iter()
        .filter(|c| c.name.as_str() == spec)
        .collect();
    match matches.as_slice() {
        [one] => Ok((*one).clone()),
        [] => bail!("server {server} has no channel named or numbered `{spec}`"),
        many => bail!("{} channels are named `{spec}`: use its number", many.len()),
    }
}

/// A user by public key (64 hex characters).
pub fn user(spec: &str) -> Result<UserId> {
    spec.trim()
        .to_ascii_lowercase()
        .parse()
        .map_err(|e| anyhow!("`{spec}` is not a user's public key: {e}"))
}

/// A person to befriend: `@handle` (looked up on the relay), a `hum://friend/...` link, or a
/// public key.
pub async fn friend(client: &RelayClient, spec: &str) -> Result<UserId> {
    match PersonRef::parse(spec).map_err(|e| anyhow!("`{}`: {e}", spec.trim()))? {
        PersonRef::Key(key) => Ok(key),
        PersonRef::Handle(h) => {
            let (who, _) = client
                .handle_lookup(h.clone())
                .await
                .with_context(|| format!("looking up {h}"))?;
            Ok(who.id)
        }
    }
}

/// A member of `server`: a public key or `@handle` (as [`friend`]), else the display name of
/// exactly one member (two members with that name: use the key).
pub async fn member(client: &RelayClient, server: ServerId, spec: &str) -> Result<UserId> {
    if let Ok(id) = friend(client, spec).await {
        return Ok(id);
    }
    let info = client.server_info(server).await?;
    let name = spec.trim();
    let found: Vec<UserId> = info
        .members
        .iter()
        .filter(|m| m.user.display_name.as_str() == name)
        .map(|m| m.user.id)
        .collect();
    match found.as_slice() {
        [one] => Ok(*one),
        [] => bail!(
            "no member of {} is called `{name}` (use their public key or @handle)",
            info.name
        ),
        _ => bail!(
            "{} members of {} are called `{name}`: use the public key",
            found.len(),
            info.name
        ),
    }
}

/// A user banned from `server`: a public key or `@handle` (as [`friend`]), else the display
/// name of exactly one banned user (a banned user is no longer a member).
pub async fn banned(client: &RelayClient, server: ServerId, spec: &str) -> Result<UserId> {
    if let Ok(id) = friend(client, spec).await {
        return Ok(id);
    }
    let name = spec.trim();
    let found: Vec<UserId> = client
        .ban_list(server)
        .await
        .context("listing the bans")?
        .iter()
        .filter(|u| u.display_name.as_str() == name)
        .map(|u| u.id)
        .collect();
    match found.as_slice() {
        [one] => Ok(*one),
        [] => bail!(
            "nobody called `{name}` is banned from server {server} (use their public key or @handle)"
        ),
        _ => bail!(
            "{} banned users are called `{name}`: use the public key",
            found.len()
        ),
    }
}

/// An invite code, or a `hum://invite/CODE` link.
pub fn invite(spec: &str) -> Result<InviteCode> {
    links::parse_invite(spec).map_err(|e| anyhow!("`{}`: {e}", spec.trim()))
}

/// `join,speak,video,stream` (any subset), `all` or `none`.
pub fn permissions(spec: &str) -> Result<Permissions> {
    let mut p = Permissions {
        join: false,
        speak: false,
        video: false,
        stream: false,
    };
    for word in spec.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        match word {
            "all" => p = Permissions::ALL,
            "none" => {}
            "join" => p.join = true,
            "speak" => p.speak = true,
            "video" => p.video = true,
            "stream" => p.stream = true,
            other => {
                bail!("unknown permission `{other}`: use join, speak, video, stream, all or none")
            }
        }
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_lists_parse() {
        let p = permissions("join, speak").unwrap();
        assert!(p.join && p.speak && !p.video && !p.stream);
        assert_eq!(permissions("all").unwrap(), Permissions::ALL);
        assert!(!permissions("none").unwrap().join);
        assert!(permissions("fly").is_err());
    }

    #[test]
    fn invites_are_codes_or_links() {
        assert_eq!(invite(" Ab12Cd34 ").unwrap().as_str(), "Ab12Cd34");
        assert_eq!(
            invite("hum://invite/Ab12Cd34").unwrap().as_str(),
            "Ab12Cd34"
        );
        assert!(invite(&format!("hum://friend/{}", "ab".repeat(32))).is_err());
        assert!(invite("hum://invite/").is_err());
    }

    #[test]
    fn user_keys_must_be_hex() {
        assert!(user(&"ab".repeat(32)).is_ok());
        assert!(user(&"AB".repeat(32)).is_ok());
        assert!(user("alice").is_err());
    }
}
