//! What the host offers a policy: structured logging and the module's own
//! configuration values (its `config { }` block in the plugin config).
//!
//! The host keeps at most 32 log lines per call, truncates messages to
//! 1 KiB and field values to 256 bytes.

use crate::KeyValue;
use crate::bindings::base::wasmdock::policy::host as imports;

pub use imports::Level;

/// Writes one log line at `level` with `key = value` fields.
pub fn log(level: Level, message: &str, fields: &[(&str, &str)]) {
    let fields: Vec<KeyValue> = fields
        .iter()
        .map(|(key, value)| KeyValue {
            key: (*key).to_owned(),
            value: (*value).to_owned(),
        })
        .collect();
    imports::log(level, message, &fields);
}

/// Logs at debug level.
pub fn debug(message: &str, fields: &[(&str, &str)]) {
    log(Level::Debug, message, fields);
}

/// Logs at info level.
pub fn info(message: &str, fields: &[(&str, &str)]) {
    log(Level::Info, message, fields);
}

/// Logs at warn level.
pub fn warn(message: &str, fields: &[(&str, &str)]) {
    log(Level::Warn, message, fields);
}

/// Logs at error level.
pub fn error(message: &str, fields: &[(&str, &str)]) {
    log(Level::Error, message, fields);
}

/// The module's config value for `key`, if the operator set one.
pub fn config(key: &str) -> Option<String> {
    imports::config_get(key)
}

/// Every key of the module's config, sorted.
pub fn config_keys() -> Vec<String> {
    imports::config_keys()
}
