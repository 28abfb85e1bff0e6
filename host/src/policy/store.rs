//! What one evaluation's fresh [`Store`](wasmtime::Store) holds: its limits,
//! the module's config values, the host imports' bookkeeping, and a WASI
//! context that grants nothing and is only built if the guest touches WASI.

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime::component::{Linker, Resource};
use wasmtime::{ResourceLimiter, Result as WasmResult};
use wasmtime_wasi::p2::DynPollable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::{host, types};
use crate::config::policy::Hook;

/// Log lines one call may write; more are counted, not written.
pub(crate) const MAX_LOG_LINES: u32 = 32;
/// Longest log message kept, in bytes.
pub(crate) const MAX_LOG_MESSAGE: usize = 1024;
/// Longest log field value kept, in bytes.
pub(crate) const MAX_LOG_FIELD: usize = 256;
/// Fields kept per log line.
pub(crate) const MAX_LOG_FIELDS: usize = 16;
/// Bytes of a guest's stderr kept (a panic message, for the trap error).
const STDERR_CAPACITY: usize = 4096;
/// Largest buffer of random bytes one WASI call may ask for.
const MAX_RANDOM_BYTES: u64 = 64 * 1024;
/// The version of `wasi:io` that wasmtime-wasi links (guests importing any
/// 0.2.x version resolve to it).
const WASI_IO_POLL: &str = "wasi:io/poll@0.2.12";

/// What a module's evaluations share: its name and config values.
#[derive(Debug)]
pub(crate) struct ModuleContext {
    pub(crate) name: String,
    pub(crate) config: BTreeMap<String, String>,
    pub(crate) memory_limit: usize,
}

/// The data of one evaluation's store.
pub(crate) struct StoreData {
    module: Arc<ModuleContext>,
    hook: Option<Hook>,
    limits: Limits,
    log_lines: u32,
    logs_dropped: u32,
    wasi: Option<WasiCtx>,
    stderr: Option<MemoryOutputPipe>,
    table: ResourceTable,
}

impl std::fmt::Debug for StoreData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreData")
            .field("module", &self.module.name)
            .field("hook", &self.hook)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl StoreData {
    pub(crate) fn new(module: Arc<ModuleContext>, hook: Option<Hook>) -> Self {
        let limits = Limits {
            memory: module.memory_limit,
            memory_hit: false,
            table_hit: false,
        };
        Self {
            module,
            hook,
            limits,
            log_lines: 0,
            logs_dropped: 0,
            wasi: None,
            stderr: None,
            table: ResourceTable::new(),
        }
    }

    pub(crate) fn limiter(&mut self) -> &mut dyn ResourceLimiter {
        &mut self.limits
    }

    /// Whether the guest tried to grow past its memory or table limit.
    pub(crate) fn limit_hit(&self) -> Option<&'static str> {
        if self.limits.memory_hit {
            Some("memory")
        } else if self.limits.table_hit {
            Some("table")
        } else {
            None
        }
    }

    /// What the guest wrote to stderr (e.g. a Rust panic message), if any.
    pub(crate) fn stderr(&self) -> Option<String> {
        let bytes = self.stderr.as_ref()?.contents();
        let text = String::from_utf8_lossy(&bytes).trim().to_owned();
        (!text.is_empty()).then_some(text)
    }

    /// Log lines the guest wrote beyond the cap.
    pub(crate) fn logs_dropped(&self) -> u32 {
        self.logs_dropped
    }
}

/// Memory and table limits of one store. Growth past a limit traps (rather
/// than returning -1 to the guest), and the hit is remembered so the error
/// can say which limit it was.
#[derive(Debug)]
struct Limits {
    memory: usize,
    memory_hit: bool,
    table_hit: bool,
}

/// The error a limit hit traps with.
#[derive(Debug)]
pub(crate) struct LimitExceeded;

impl std::fmt::Display for LimitExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("resource limit exceeded")
    }
}

impl std::error::Error for LimitExceeded {}

impl ResourceLimiter for Limits {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> WasmResult<bool> {
        if desired > self.memory {
            self.memory_hit = true;
            return Err(LimitExceeded.into());
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> WasmResult<bool> {
        if desired > super::engine::MAX_TABLE_ELEMENTS {
            self.table_hit = true;
            return Err(LimitExceeded.into());
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        32
    }

    fn tables(&self) -> usize {
        32
    }

    fn memories(&self) -> usize {
        4
    }
}

/// A WASI context with nothing granted: no preopened directories, no
/// environment, no arguments, no sockets, no name lookups, small random
/// buffers; stdin is closed, stdout discarded, and the first 4 KiB of
/// stderr kept for error messages.
fn empty_wasi(stderr: MemoryOutputPipe) -> WasiCtx {
    WasiCtx::builder()
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .max_random_size(MAX_RANDOM_BYTES)
        .stderr(stderr)
        .build()
}

impl WasiView for StoreData {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        if self.wasi.is_none() {
            let stderr = MemoryOutputPipe::new(STDERR_CAPACITY);
            self.wasi = Some(empty_wasi(stderr.clone()));
            self.stderr = Some(stderr);
        }
        WasiCtxView {
            ctx: self.wasi.as_mut().expect("built just above"),
            table: &mut self.table,
        }
    }
}

/// The error a guest gets when it tries to block in a host call.
#[derive(Debug)]
pub(crate) struct Blocked;

impl std::fmt::Display for Blocked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("tried to block (sleep or wait on a pollable); policies may not block")
    }
}

impl std::error::Error for Blocked {}

/// Replaces WASI's blocking calls (`poll`, `pollable.block`) with ones that
/// trap at once. Epoch deadlines cannot interrupt a thread blocked in a host
/// call, so a guest that sleeps would otherwise hold its thread for as long
/// as it asked.
pub(crate) fn forbid_blocking(linker: &mut Linker<StoreData>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut poll = linker.instance(WASI_IO_POLL)?;
    poll.func_wrap(
        "poll",
        |_store, _args: (Vec<Resource<DynPollable>>,)| -> wasmtime::Result<(Vec<u32>,)> {
            Err(Blocked.into())
        },
    )?;
    poll.func_wrap(
        "[method]pollable.block",
        |_store, _args: (Resource<DynPollable>,)| -> wasmtime::Result<()> { Err(Blocked.into()) },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

impl types::Host for StoreData {}

impl host::Host for StoreData {
    fn log(&mut self, level: host::Level, message: String, fields: Vec<types::KeyValue>) {
        if self.log_lines >= MAX_LOG_LINES {
            self.logs_dropped = self.logs_dropped.saturating_add(1);
            return;
        }
        self.log_lines += 1;
        let message = truncate(&message, MAX_LOG_MESSAGE);
        let mut rendered = String::new();
        for field in fields.iter().take(MAX_LOG_FIELDS) {
            if !rendered.is_empty() {
                rendered.push(' ');
            }
            rendered.push_str(truncate(&field.key, MAX_LOG_FIELD));
            rendered.push('=');
            rendered.push_str(truncate(&field.value, MAX_LOG_FIELD));
        }
        let module = self.module.name.as_str();
        let hook = self.hook.map_or("load", Hook::as_str);
        match level {
            host::Level::Trace => {
                tracing::trace!(module, hook, fields = %rendered, "policy: {message}")
            }
            host::Level::Debug => {
                tracing::debug!(module, hook, fields = %rendered, "policy: {message}")
            }
            host::Level::Info => {
                tracing::info!(module, hook, fields = %rendered, "policy: {message}")
            }
            host::Level::Warn => {
                tracing::warn!(module, hook, fields = %rendered, "policy: {message}")
            }
            host::Level::Error => {
                tracing::error!(module, hook, fields = %rendered, "policy: {message}")
            }
        }
    }

    fn config_get(&mut self, key: String) -> Option<String> {
        self.module.config.get(&key).cloned()
    }

    fn config_keys(&mut self) -> Vec<String> {
        self.module.config.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;
    use std::sync::Mutex;

    use tracing::field::{Field, Visit};
    use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

    use super::*;
    use crate::policy::bindings::host::Host as _;

    /// One event's fields: name and rendered value, in order.
    type Fields = Vec<(String, String)>;

    /// Every event's fields.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<Fields>>>);

    impl<S: tracing::Subscriber> Layer<S> for Capture {
        fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
            struct Fields(Vec<(String, String)>);
            impl Visit for Fields {
                fn record_str(&mut self, field: &Field, value: &str) {
                    self.0.push((field.name().to_owned(), value.to_owned()));
                }
                fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
                    let mut text = String::new();
                    let _ = write!(text, "{value:?}");
                    self.0.push((field.name().to_owned(), text));
                }
            }
            let mut fields = Fields(Vec::new());
            event.record(&mut fields);
            self.0.lock().unwrap().push(fields.0);
        }
    }

    fn store_data() -> StoreData {
        StoreData::new(
            Arc::new(ModuleContext {
                name: "m".into(),
                config: BTreeMap::new(),
                memory_limit: 1 << 20,
            }),
            Some(Hook::TaskAdmission),
        )
    }

    #[test]
    fn a_call_logs_at_most_32_lines_and_cut_messages_and_fields() {
        let capture = Capture::default();
        let subscriber = tracing_subscriber::registry().with(capture.clone());
        let mut data = store_data();
        // Multi-byte characters, so a cut must land on a character boundary.
        let long = "é".repeat(4096);
        tracing::subscriber::with_default(subscriber, || {
            for _ in 0..40 {
                let fields = (0..40)
                    .map(|n| types::KeyValue {
                        key: format!("k{n}{long}"),
                        value: long.clone(),
                    })
                    .collect();
                data.log(host::Level::Error, long.clone(), fields);
            }
        });
        assert_eq!(data.logs_dropped(), 40 - MAX_LOG_LINES);
        let events = capture.0.lock().unwrap();
        assert_eq!(events.len(), MAX_LOG_LINES as usize, "lines written");
        for event in events.iter() {
            let get = |name: &str| {
                event
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.as_str())
                    .unwrap_or_else(|| panic!("no {name} in {event:?}"))
            };
            let message = get("message").strip_prefix("policy: ").unwrap();
            assert_eq!(message, truncate(&long, MAX_LOG_MESSAGE));
            assert!(
                message.len() <= MAX_LOG_MESSAGE && message.len() > MAX_LOG_MESSAGE - 2,
                "message of {} bytes",
                message.len()
            );
            let fields = get("fields");
            let pairs: Vec<&str> = fields.split(' ').collect();
            assert_eq!(pairs.len(), MAX_LOG_FIELDS, "fields kept");
            for pair in pairs {
                let (key, value) = pair.split_once('=').unwrap();
                assert!(key.len() <= MAX_LOG_FIELD, "a key of {} bytes", key.len());
                assert_eq!(value, truncate(&long, MAX_LOG_FIELD));
            }
            assert_eq!(get("module"), "m");
            assert_eq!(get("hook"), "task-admission");
        }
    }

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncate("abc", 3), "abc");
        assert_eq!(truncate("abcd", 3), "abc");
        assert_eq!(truncate("aé", 2), "a");
        assert_eq!(truncate("€€", 5), "€");
    }
}
