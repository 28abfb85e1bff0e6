//! Configuration decoded at the edge, strictly: the plugin config (SetConfig)
//! and, later, the task config (StartTask).
//!
//! Both arrive as cty msgpack ([`cty`]) shaped by an hclspec schema we hand
//! Nomad ([`hclspec`]). Decoding is strict: unknown keys and wrong types are
//! errors that name the key, and nothing here has side effects.
//! [`reference`] renders `docs/configuration.md` from the two schemas.

pub mod cty;
pub mod duration;
pub mod hclspec;
pub mod plugin;
pub mod policy;
pub mod reference;
pub mod task;

pub use duration::GoDuration;
pub use plugin::PluginConfig;

/// A configuration value that is wrong, with the dotted path of its key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", if .key.is_empty() { String::new() } else { format!("{}: ", .key) })]
pub struct ConfigError {
    /// Dotted key path (`gc.dangling_containers.creation_grace`); empty when
    /// the whole payload is at fault.
    pub key: String,
    /// What is wrong with it.
    pub message: String,
}

impl ConfigError {
    /// An error about `key`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}
