//! Hum's client runtime. Everything the desktop app and the `hum` CLI do goes through here; nothing
//! in this crate depends on tauri.
//!
//! One module per domain; each exposes an async API plus an event stream.

pub mod budget;
pub mod calls;
pub mod e2ee;
pub mod ice;
pub mod instance;
pub mod video_preview;
pub mod voice;

pub mod identity;
pub mod relay;
pub mod stream;
pub mod update;

pub use identity::{Identity, IdentityError};
pub use relay::{ClientError, ClientEvent, ConnectionState, RelayClient, RelayConfig, ServerEntry};
