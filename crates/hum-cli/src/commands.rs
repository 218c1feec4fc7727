//! The subcommands that talk to the relay.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use hum_engine::{ClientEvent, ConnectionState, Identity, RelayClient, RelayConfig};
use hum_proto::links::HumLink;
use hum_proto::signal::{
    ChannelInfo, ChannelPermissions, DisplayName, Handle, Name, Role, VoiceState,
};
use hum_proto::{InviteCode, ServerId};
use serde_json::json;

use crate::{Cli, Command, bench, resolve};

#[derive(Subcommand, Debug)]
pub enum IdentityCmd {
    /// Make a new key pair and save it (refuses to replace an existing one without --force).
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        force: bool,
    },
    /// Show your public key and display name (no relay needed).
    Show,
}

#[derive(Subcommand, Debug)]
pub enum FriendsCmd {
    /// Friends with presence, and pending requests.
    List,
    /// Send a friend request: `@handle`, a `hum://friend/...` link or a public key.
    Add { user: String },
    /// Print your friend link (`hum://friend/KEY`) for others to paste or click.
    Link,
    /// Accept a pending request.
    Accept { user: String },
    /// Decline a pending request.
    Decline { user: String },
    /// End a friendship or withdraw your request.
    Remove { user: String },
}

#[derive(Subcommand, Debug)]
pub enum HandleCmd {
    /// Your handle on this relay (or `user`'s: a public key).
    Show { user: Option<String> },
    /// Take a handle (`@ada` or `ada`), replacing yours; refused if someone holds it or a
    /// look-alike.
    Set { handle: String },
    /// Give your handle up.
    Clear,
    /// Who holds a handle.
    Lookup { handle: String },
}

#[derive(Subcommand, Debug)]
pub enum ServerCmd {
    /// Create a server; you become its owner.
    Create { name: String },
    /// Servers you are a member of.
    List,
    /// Members and channels of a server.
    Info { server: String },
    /// Make an invite code.
    Invite {
        server: String,
        #[arg(long)]
        max_uses: Option<u32>,
        /// e.g. 1h, 7days
        #[arg(long, value_parser = humantime::parse_duration)]
        expires: Option<Duration>,
    },
    /// Join a server with an invite code or a `hum://invite/CODE` link.
    Join { code: String },
    /// Leave a server.
    Leave { server: String },
    /// Rename a server (admin).
    Rename { server: String, name: String },
    /// Delete a server (owner).
    Delete { server: String },
    /// Make a member an admin, or an admin a member again (owner). MEMBER: a public key, an
    /// @handle, or the display name of exactly one member.
    Role {
        server: String,
        member: String,
        #[arg(value_parser = ["admin", "member"])]
        role: String,
    },
    /// Remove a member from a server (admins may remove members; the owner anyone). They can
    /// join again with an invite.
    Kick { server: String, member: String },
    /// Remove a member and keep them out until unbanned (admins ban members; the owner
    /// anyone). MEMBER as for `role`.
    Ban { server: String, member: String },
    /// Let a banned user join again with an invite (admin). USER: a public key, an @handle,
    /// or the display name of exactly one banned user.
    Unban { server: String, user: String },
    /// Who is banned from a server (admin).
    Bans { server: String },
}

#[derive(Subcommand, Debug)]
pub enum ChannelCmd {
    /// Create a voice channel (admin).
    Create {
        #[arg(long)]
        server: String,
        name: String,
        /// Most people allowed in at once.
        #[arg(long)]
        max: Option<u32>,
        /// What members may do: join,speak,video,stream | all | none.
        #[arg(long)]
        member_perms: Option<String>,
        /// What admins may do (owners may do everything).
        #[arg(long)]
        admin_perms: Option<String>,
    },
    /// Channels of a server, with who is in them.
    List {
        #[arg(long)]
        server: String,
    },
    /// Rename a channel (admin).
    Rename {
        #[arg(long)]
        server: String,
        channel: String,
        name: String,
    },
    /// Change a channel's limit and permissions (admin).
    Configure {
        #[arg(long)]
        server: String,
        channel: String,
        #[arg(long)]
        max: Option<u32>,
        #[arg(long)]
        member_perms: Option<String>,
        #[arg(long)]
        admin_perms: Option<String>,
        /// Past this many members the channel moves to the relay's SFU (0: always; the relay's
        /// limit, 8 unless its operator lowered it, or more: back to the relay's).
        #[arg(long)]
        mesh_limit: Option<u32>,
    },
    /// Delete a channel (admin).
    Delete {
        #[arg(long)]
        server: String,
        channel: String,
    },
    /// Sit in a channel without audio (shows in the roster), printing its events.
    Join {
        #[arg(long)]
        server: String,
        channel: String,
        #[arg(long)]
        muted: bool,
        /// Leave after this long; default: stay until interrupted.
        #[arg(long, value_parser = humantime::parse_duration)]
        duration: Option<Duration>,
    },
}

/// Where the identity lives unless `--identity` says otherwise.
pub fn default_identity_path() -> Result<PathBuf> {
    let dirs = directories::ProjectDirs::from("", "", "hum")
        .context("cannot find a home directory for Hum's data: pass --identity FILE")?;
    Ok(dirs.data_dir().join("identity.json"))
}

fn identity_path(cli: &Cli) -> Result<PathBuf> {
    match &cli.identity {
        Some(p) => Ok(p.clone()),
        None => default_identity_path(),
    }
}

pub fn load_identity(cli: &Cli) -> Result<Identity> {
    Ok(Identity::load(&identity_path(cli)?)?)
}

/// Log in to the relay named on the command line.
pub async fn connect(cli: &Cli) -> Result<RelayClient> {
    let identity = load_identity(cli)?;
    RelayClient::connect(identity, RelayConfig::new(cli.relay.clone()))
        .await
        .with_context(|| format!("logging in to {}", cli.relay))
}

fn name(s: &str) -> Result<Name> {
    Name::new(s).with_context(|| format!("invalid name `{s}`"))
}

fn channel_permissions(
    member: Option<&str>,
    admin: Option<&str>,
    base: ChannelPermissions,
) -> Result<Option<ChannelPermissions>> {
    if member.is_none() && admin.is_none() {
        return Ok(None);
    }
    let mut p = base;
    if let Some(m) = member {
        p.member = resolve::permissions(m)?;
    }
    if let Some(a) = admin {
        p.admin = resolve::permissions(a)?;
    }
    Ok(Some(p))
}

fn print_json(v: &impl serde::Serialize) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

fn print_channel(c: &ChannelInfo) {
    println!(
        "  #{:<4} {:<24} {}/{} {}",
        c.id.to_string(),
        c.name.as_str(),
        c.roster.len(),
        c.max_participants,
        c.roster
            .iter()
            .map(|r| {
                let mut s = r.user.display_name.to_string();
                if r.voice.speaking {
                    s.push_str(" (speaking)");
                }
                if r.voice.muted {
                    s.push_str(" (muted)");
                }
                if r.voice.deafened {
                    s.push_str(" (deafened)");
                }
                s
            })
            .collect::<Vec<_>>()
            .join(", ")
    );
}

/// A client event as one JSON object, for `hum events` and the tests that read it.
pub fn event_json(e: &ClientEvent) -> serde_json::Value {
    match e {
        ClientEvent::Relay(ev) => serde_json::to_value(ev).unwrap_or_default(),
        ClientEvent::State(s) => {
            let (state, detail) = match s {
                ConnectionState::Connecting { attempt } => {
                    ("connecting", json!({"attempt": attempt}))
                }
                ConnectionState::Connected { user, node, .. } => {
                    ("connected", json!({"user": user, "node": node}))
                }
                ConnectionState::Disconnected { reason, retry_in } => (
                    "disconnected",
                    json!({"reason": reason, "retry_in_ms": retry_in.map(|d| d.as_millis() as u64)}),
                ),
                ConnectionState::Stopped => ("stopped", json!({})),
            };
            json!({"type": "connection", "state": state, "detail": detail})
        }
        ClientEvent::Rejoined { channel } => json!({"type": "rejoined", "channel": channel}),
        ClientEvent::RejoinFailed { channel, reason } => {
            json!({"type": "rejoin_failed", "channel": channel, "reason": reason})
        }
    }
}

/// Print events until `duration` passes (or forever).
async fn follow_events(
    mut rx: tokio::sync::broadcast::Receiver<ClientEvent>,
    duration: Option<Duration>,
) {
    let until = duration.map(|d| tokio::time::Instant::now() + d);
    loop {
        let next = async {
            loop {
                match rx.recv().await {
                    Ok(e) => return Some(e),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        eprintln!("warning: {n} events were dropped (output too slow)");
                    }
                    Err(_) => return None,
                }
            }
        };
        let event = match until {
            Some(t) => match tokio::time::timeout_at(t, next).await {
                Ok(e) => e,
                Err(_) => return,
            },
            None => next.await,
        };
        match event {
            Some(e) => println!("{}", event_json(&e)),
            None => return,
        }
    }
}

pub async fn run(cli: Cli) -> Result<()> {
    match &cli.command {
        Command::Identity(IdentityCmd::Create { name, force }) => {
            let path = identity_path(&cli)?;
            let display = DisplayName::new(name.clone()).context("invalid display name")?;
            let id = Identity::create(&path, display, *force)?;
            if cli.json {
                print_json(&json!({"user": id.user_id(), "display_name": name, "path": path}));
            } else {
                println!(
                    "created identity {} ({name}) at {}",
                    id.user_id(),
                    path.display()
                );
            }
        }
        Command::Identity(IdentityCmd::Show) => {
            let id = load_identity(&cli)?;
            if cli.json {
                print_json(&json!({"user": id.user_id(), "display_name": id.display_name()}));
            } else {
                println!("{} {}", id.user_id(), id.display_name());
            }
        }
        Command::Whoami => {
            let client = connect(&cli).await?;
            if let ConnectionState::Connected {
                user,
                new_account,
                limits,
                node,
            } = client.state()
            {
                if cli.json {
                    print_json(
                        &json!({"user": user, "new_account": new_account, "limits": limits, "node": node}),
                    );
                } else {
                    println!(
                        "{} {}{}",
                        user.id,
                        user.display_name,
                        if new_account { " (new account)" } else { "" }
                    );
                }
            }
            client.shutdown().await;
        }
        Command::SetName { name } => {
            let display = DisplayName::new(name.clone()).context("invalid display name")?;
            let path = identity_path(&cli)?;
            let mut id = Identity::load(&path)?;
            let client = connect(&cli).await?;
            client.set_display_name(display.clone()).await?;
            id.set_display_name(display);
            id.save(&path)?;
            client.shutdown().await;
        }
        Command::Friends(cmd) => friends(&cli, cmd).await?,
        Command::Handle(cmd) => handle(&cli, cmd).await?,
        Command::Server(cmd) => server(&cli, cmd).await?,
        Command::Channel(cmd) => channel(&cli, cmd).await?,
        Command::Events { duration } => {
            let identity = load_identity(&cli)?;
            let client = RelayClient::start(identity, RelayConfig::new(cli.relay.clone()));
            let rx = client.subscribe();
            follow_events(rx, *duration).await;
            client.shutdown().await;
        }
        Command::Bench(cmd) => bench::run(&cli, cmd).await?,
        Command::Sim(args) => {
            let mut args = args.clone();
            args.json = cli.json;
            // CPU-bound and synchronous: keep it off the async workers.
            tokio::task::block_in_place(|| hum_sim::run(args))?;
        }
        Command::Voice(cmd) => crate::voice::run_voice(&cli, cmd).await?,
        Command::Call(args) => crate::voice::run_call(&cli, args).await?,
        Command::Stream(cmd) => crate::stream::run_stream(&cli, cmd).await?,
        Command::Watch(args) => crate::stream::run_watch(&cli, args).await?,
    }
    Ok(())
}

async fn friends(cli: &Cli, cmd: &FriendsCmd) -> Result<()> {
    let client = connect(cli).await?;
    match cmd {
        FriendsCmd::List => {
            let list = client.friends().await?;
            if cli.json {
                print_json(&json!({
                    "friends": list.friends, "incoming": list.incoming, "outgoing": list.outgoing
                }));
            } else {
                for f in &list.friends {
                    let status = match (&f.presence.channel, f.presence.status) {
                        (Some(loc), _) => format!("in {} / {}", loc.server_name, loc.channel_name),
                        (None, hum_proto::signal::Status::Online) => "online".into(),
                        (None, hum_proto::signal::Status::Offline) => "offline".into(),
                    };
                    println!(
                        "{} {:<24} {status}",
                        f.user.id,
                        f.user.display_name.as_str()
                    );
                }
                for u in &list.incoming {
                    println!(
                        "{} {:<24} wants to be your friend",
                        u.id,
                        u.display_name.as_str()
                    );
                }
                for u in &list.outgoing {
                    println!("{} {:<24} request sent", u.id, u.display_name.as_str());
                }
            }
        }
        FriendsCmd::Add { user } => {
            let who = resolve::friend(&client, user).await?;
            client.friend_request(who).await?;
            if !cli.json {
                println!("friend request sent to {who}");
            }
        }
        FriendsCmd::Link => {
            let link = HumLink::Friend(load_identity(cli)?.user_id()).to_string();
            if cli.json {
                print_json(&json!({ "link": link }));
            } else {
                println!("{link}");
            }
        }
        FriendsCmd::Accept { user } => client.friend_accept(resolve::user(user)?).await?,
        FriendsCmd::Decline { user } => client.friend_decline(resolve::user(user)?).await?,
        FriendsCmd::Remove { user } => client.friend_remove(resolve::user(user)?).await?,
    }
    client.shutdown().await;
    Ok(())
}

async fn handle(cli: &Cli, cmd: &HandleCmd) -> Result<()> {
    let parse = |s: &str| Handle::parse(s).map_err(|e| anyhow::anyhow!("`{s}`: {e}"));
    let client = connect(cli).await?;
    let (user, handle) = match cmd {
        HandleCmd::Show { user } => {
            let user = match user {
                Some(u) => resolve::user(u)?,
                None => load_identity(cli)?.user_id(),
            };
            (user, client.handle_get(user).await?)
        }
        HandleCmd::Set { handle } => {
            let me = load_identity(cli)?.user_id();
            (me, client.handle_set(Some(parse(handle)?)).await?)
        }
        HandleCmd::Clear => (
            load_identity(cli)?.user_id(),
            client.handle_set(None).await?,
        ),
        HandleCmd::Lookup { handle } => {
            let (who, h) = client.handle_lookup(parse(handle)?).await?;
            (who.id, h)
        }
    };
    if cli.json {
        print_json(&json!({ "user": user, "handle": handle }));
    } else {
        match handle {
            Some(h) => println!("{h} {user}"),
            None => println!("(no handle) {user}"),
        }
    }
    client.shutdown().await;
    Ok(())
}

async fn server(cli: &Cli, cmd: &ServerCmd) -> Result<()> {
    let client = connect(cli).await?;
    match cmd {
        ServerCmd::Create { name: n } => {
            let s = client.server_create(name(n)?).await?;
            if cli.json {
                print_json(&s);
            } else {
                println!("created server {} ({})", s.id, s.name);
            }
        }
        ServerCmd::List => {
            let servers = client.servers().await?;
            if cli.json {
                print_json(&servers);
            } else {
                for s in servers {
                    println!(
                        "{:<6} {:<32} {}",
                        s.id.to_string(),
                        s.name.as_str(),
                        s.role.as_str()
                    );
                }
            }
        }
        ServerCmd::Info { server } => {
            let id = resolve::server(&client, server).await?.id;
            let s = client.server_info(id).await?;
            if cli.json {
                print_json(&s);
            } else {
                println!("{} ({}), you are {}", s.name, s.id, s.role.as_str());
                println!("members:");
                for m in &s.members {
                    println!(
                        "  {} {:<24} {:<6} {}",
                        m.user.id,
                        m.user.display_name.as_str(),
                        m.role.as_str(),
                        if m.online { "online" } else { "offline" }
                    );
                }
                println!("voice channels:");
                s.channels.iter().for_each(print_channel);
            }
        }
        ServerCmd::Invite {
            server,
            max_uses,
            expires,
        } => {
            let id = resolve::server(&client, server).await?.id;
            let invite = client.invite_create(id, *max_uses, *expires).await?;
            if cli.json {
                print_json(&invite);
            } else {
                println!("{}", invite.code);
            }
        }
        ServerCmd::Join { code } => {
            let code: InviteCode = resolve::invite(code)?;
            let s = client.invite_join(code).await?;
            if cli.json {
                print_json(&s);
            } else {
                println!("joined server {} ({})", s.id, s.name);
            }
        }
        ServerCmd::Leave { server } => {
            let id = resolve::server(&client, server).await?.id;
            client.server_leave(id).await?;
        }
        ServerCmd::Rename { server, name: n } => {
            let id = resolve::server(&client, server).await?.id;
            client.server_rename(id, name(n)?).await?;
        }
        ServerCmd::Delete { server } => {
            let id = resolve::server(&client, server).await?.id;
            client.server_delete(id).await?;
        }
        ServerCmd::Role {
            server,
            member,
            role,
        } => {
            let id = resolve::server(&client, server).await?.id;
            let user = resolve::member(&client, id, member).await?;
            let role = if role == "admin" {
                Role::Admin
            } else {
                Role::Member
            };
            client.member_set_role(id, user, role).await?;
        }
        ServerCmd::Kick { server, member } => {
            let id = resolve::server(&client, server).await?.id;
            let user = resolve::member(&client, id, member).await?;
            client.member_kick(id, user).await?;
        }
        ServerCmd::Ban { server, member } => {
            let id = resolve::server(&client, server).await?.id;
            let user = resolve::member(&client, id, member).await?;
            client.member_ban(id, user).await?;
        }
        ServerCmd::Unban { server, user } => {
            let id = resolve::server(&client, server).await?.id;
            let user = resolve::banned(&client, id, user).await?;
            client.member_unban(id, user).await?;
        }
        ServerCmd::Bans { server } => {
            let id = resolve::server(&client, server).await?.id;
            let users = client.ban_list(id).await?;
            if cli.json {
                print_json(&users);
            } else if users.is_empty() {
                println!("nobody is banned");
            } else {
                for u in &users {
                    println!("  {} {}", u.id, u.display_name.as_str());
                }
            }
        }
    }
    client.shutdown().await;
    Ok(())
}

async fn channel(cli: &Cli, cmd: &ChannelCmd) -> Result<()> {
    let client = connect(cli).await?;
    let server_id = |spec: &str| {
        let client = client.clone();
        let spec = spec.to_owned();
        async move { Ok::<ServerId, anyhow::Error>(resolve::server(&client, &spec).await?.id) }
    };
    match cmd {
        ChannelCmd::Create {
            server,
            name: n,
            max,
            member_perms,
            admin_perms,
        } => {
            let sid = server_id(server).await?;
            let perms = channel_permissions(
                member_perms.as_deref(),
                admin_perms.as_deref(),
                ChannelPermissions::default(),
            )?;
            let c = client.channel_create(sid, name(n)?, *max, perms).await?;
            if cli.json {
                print_json(&c);
            } else {
                println!("created channel {} ({})", c.id, c.name);
            }
        }
        ChannelCmd::List { server } => {
            let sid = server_id(server).await?;
            let channels = client.channels(sid).await?;
            if cli.json {
                print_json(&channels);
            } else {
                channels.iter().for_each(print_channel);
            }
        }
        ChannelCmd::Rename {
            server,
            channel,
            name: n,
        } => {
            let sid = server_id(server).await?;
            let c = resolve::channel(&client, sid, channel).await?;
            client.channel_rename(c.id, name(n)?).await?;
        }
        ChannelCmd::Configure {
            server,
            channel,
            max,
            member_perms,
            admin_perms,
            mesh_limit,
        } => {
            let sid = server_id(server).await?;
            let c = resolve::channel(&client, sid, channel).await?;
            let perms = channel_permissions(
                member_perms.as_deref(),
                admin_perms.as_deref(),
                c.permissions,
            )?;
            if max.is_none() && perms.is_none() && mesh_limit.is_none() {
                bail!(
                    "nothing to change: pass --max, --member-perms/--admin-perms and/or --mesh-limit"
                );
            }
            client
                .channel_configure_with_mesh_limit(c.id, *max, perms, *mesh_limit)
                .await?;
        }
        ChannelCmd::Delete { server, channel } => {
            let sid = server_id(server).await?;
            let c = resolve::channel(&client, sid, channel).await?;
            client.channel_delete(c.id).await?;
        }
        ChannelCmd::Join {
            server,
            channel,
            muted,
            duration,
        } => {
            let sid = server_id(server).await?;
            let c = resolve::channel(&client, sid, channel).await?;
            let rx = client.subscribe();
            let voice = VoiceState {
                muted: *muted,
                ..VoiceState::default()
            };
            let (joined, _) = client.channel_join(c.id, voice).await?;
            println!("{}", json!({"type": "joined", "channel": joined}));
            follow_events(rx, *duration).await;
            client.channel_leave().await.ok();
        }
    }
    client.shutdown().await;
    Ok(())
}
