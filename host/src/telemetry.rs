//! Logging to stderr as hclog-compatible JSON, one object per line.
//!
//! The Nomad client reads a plugin's stderr line by line and re-emits lines
//! that parse as hclog JSON at their own level: `@level`, `@message`,
//! `@module` and `@timestamp` with exactly six fractional digits and `Z`.
//! Anything else is logged verbatim at DEBUG, so every line we write is JSON.
//!
//! After an agent crash stderr is a broken pipe. Writes then fail with EPIPE
//! (Rust ignores SIGPIPE); the logger drops such lines and carries on, since
//! the plugin must keep serving for the agent to reattach.

use std::io::Write as _;
use std::time::SystemTime;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;

/// Environment variable that sets our log level (`trace` … `error`).
pub const LOG_LEVEL_ENV: &str = "WASMDOCK_LOG_LEVEL";

/// The `@module` of our log lines; submodules append `.<module>`.
const MODULE: &str = "wasmdock";

/// Installs the JSON logger as the global subscriber and routes panics to it.
/// Our own events are kept from `WASMDOCK_LOG_LEVEL` (default `debug`; the
/// agent filters further), dependencies' events from `warn` up.
pub fn init() {
    let level = std::env::var(LOG_LEVEL_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<LevelFilter>().ok())
        .unwrap_or(LevelFilter::DEBUG);
    let filter = Targets::new()
        .with_default(LevelFilter::WARN)
        .with_target("wasmdock_host", level);
    let subscriber = tracing_subscriber::registry().with(HclogLayer.with_filter(filter));
    // A second init (tests) keeps the first subscriber.
    let _ = tracing::subscriber::set_global_default(subscriber);
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let payload = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".to_owned());
        tracing::error!(location, "panic: {payload}");
    }));
}

/// The `tracing` layer that writes hclog JSON lines to stderr.
#[derive(Debug)]
struct HclogLayer;

/// Span fields, kept in the span's extensions and added to its events.
struct SpanFields(Map<String, Value>);

impl<S> Layer<S> for HclogLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        let mut visitor = JsonVisitor::default();
        attrs.record(&mut visitor);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanFields(visitor.fields));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut visitor = JsonVisitor::default();
        event.record(&mut visitor);
        let mut line = Map::new();
        line.insert(
            "@level".to_owned(),
            Value::from(level_name(*event.metadata().level())),
        );
        line.insert(
            "@message".to_owned(),
            Value::from(visitor.message.unwrap_or_default()),
        );
        line.insert(
            "@module".to_owned(),
            Value::from(module_of(event.metadata().target())),
        );
        line.insert(
            "@timestamp".to_owned(),
            Value::from(timestamp(SystemTime::now())),
        );
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(fields) = span.extensions().get::<SpanFields>() {
                    for (key, value) in &fields.0 {
                        line.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        for (key, value) in visitor.fields {
            line.insert(key, value);
        }
        let mut bytes = Value::Object(line).to_string().into_bytes();
        bytes.push(b'\n');
        // One write per line so concurrent lines do not interleave; errors
        // (EPIPE after an agent crash) are dropped on purpose.
        let _ = std::io::stderr().lock().write_all(&bytes);
    }
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::TRACE => "trace",
        Level::DEBUG => "debug",
        Level::INFO => "info",
        Level::WARN => "warn",
        Level::ERROR => "error",
    }
}

/// `wasmdock_host::plugin::handshake` → `wasmdock.plugin`; targets of other
/// crates are kept as they are.
fn module_of(target: &str) -> String {
    match target.strip_prefix("wasmdock_host") {
        Some(rest) => match rest.trim_start_matches("::").split("::").next() {
            Some(first) if !first.is_empty() => format!("{MODULE}.{first}"),
            _ => MODULE.to_owned(),
        },
        None => target.to_owned(),
    }
}

/// RFC 3339 in UTC with exactly six fractional digits, as hclog writes and
/// the Nomad client parses (`2006-01-02T15:04:05.000000Z07:00`).
pub fn timestamp(time: SystemTime) -> String {
    humantime::format_rfc3339_micros(time).to_string()
}

#[derive(Default)]
struct JsonVisitor {
    message: Option<String>,
    fields: Map<String, Value>,
}

impl JsonVisitor {
    fn put(&mut self, field: &Field, value: Value) {
        if field.name() == "message" {
            self.message = Some(match value {
                Value::String(s) => s,
                other => other.to_string(),
            });
        } else {
            // Keys starting with '@' are hclog's own; keep user keys apart.
            let name = field.name().trim_start_matches('@');
            self.fields.insert(name.to_owned(), value);
        }
    }
}

impl Visit for JsonVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, Value::from(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::from(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        // The whole source chain, so one line explains the failure.
        let mut text = value.to_string();
        let mut source = value.source();
        while let Some(err) = source {
            text.push_str(": ");
            text.push_str(&err.to_string());
            source = err.source();
        }
        self.put(field, Value::from(text));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn timestamp_has_six_fraction_digits_and_z() {
        let t = UNIX_EPOCH + Duration::from_nanos(1_767_366_245_123_456_789);
        assert_eq!(timestamp(t), "2026-01-02T15:04:05.123456Z");
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
    }

    #[test]
    fn modules_follow_our_module_tree() {
        assert_eq!(
            module_of("wasmdock_host::plugin::handshake"),
            "wasmdock.plugin"
        );
        assert_eq!(module_of("wasmdock_host"), "wasmdock");
        assert_eq!(module_of("h2::proto"), "h2::proto");
    }
}
