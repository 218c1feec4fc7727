//! One module per domain. Each command is a thin wrapper: sync ones over a plain function taking
//! `&AppState` (unit-tested without a webview), async ones over hum-engine's `RelayClient`.

pub mod budget;
pub mod calls;
pub mod connection;
pub mod desktop;
pub mod devices;
pub mod friends;
pub mod identity;
pub mod links;
pub mod live;
pub mod members;
pub mod privacy;
pub mod screen;
pub mod servers;
pub mod settings;
pub mod streams;
pub mod video;
pub mod voice;
