//! A Nomad client session with one plugin process: launch as the agent
//! does, SetConfig (with the node's topology), Init, keep the Fingerprint
//! and TaskEvents streams open as the agent does, then start, watch, stop
//! and destroy tasks. Everything seen is kept for the caller (the tour and
//! its test decide on it) and, unless quiet, printed as it happens.

#![expect(
    clippy::print_stdout,
    reason = "the dev client reports to a person on a terminal"
)]

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt as _;
use tonic::transport::Channel;

use super::alloc::{self, AllocDir, Node, Stream};
use super::taskfile::TaskFile;
use super::{launcher, schema};
use crate::config::cty;
use crate::rpc::proto::base::{self, base_plugin_client::BasePluginClient};
use crate::rpc::proto::drivers::{
    self as pb, driver_client::DriverClient, fingerprint_response::HealthState,
};
use crate::rpc::proto::hclspec;
use crate::rpc::proto::plugin::{Empty, grpc_controller_client::GrpcControllerClient};
use crate::rpc::proto::structs::attribute;
use crate::rpc::status::recoverable_flag;

/// How long the logs may stay quiet after a task ended before reading stops.
const LOG_DRAIN_QUIET: Duration = Duration::from_millis(300);
/// The longest the logs are drained after a task ended.
const LOG_DRAIN_MAX: Duration = Duration::from_secs(3);
/// Time allowed on top of the kill timeout for a stopped task to end.
const STOP_SLACK: Duration = Duration::from_secs(15);

/// Where output goes: nowhere (`quiet`), or stdout with the plugin's
/// warnings (all its log lines when `verbose`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Console {
    /// Print nothing.
    pub quiet: bool,
    /// Print every plugin log line, not only warnings and errors.
    pub verbose: bool,
}

impl Console {
    /// A step of the session (`▸ …`).
    pub fn step(&self, text: &str) {
        if !self.quiet {
            println!("▸ {text}");
        }
    }

    /// A detail line under a step.
    pub fn detail(&self, text: &str) {
        if !self.quiet {
            println!("  {text}");
        }
    }
}

/// How to launch and configure the plugin.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// The plugin binary.
    pub binary: PathBuf,
    /// Its arguments (as in the agent's `plugin { args = […] }`).
    pub args: Vec<String>,
    /// Extra environment for the process.
    pub env: Vec<(String, String)>,
    /// The plugin block's `config { }` body, as JSON.
    pub config: Value,
    /// Where the config came from, for messages.
    pub config_label: String,
    /// Output.
    pub console: Console,
    /// TaskStats collection interval (Nomad's default is 1 s).
    pub stats_interval: Duration,
}

/// One stats sample, as the dev client shows it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// CPU, percent of one core.
    pub cpu_percent: f64,
    /// CPU, MHz-equivalent ticks.
    pub cpu_ticks: f64,
    /// Resident memory, bytes.
    pub rss: u64,
    /// Memory usage, bytes.
    pub memory_usage: u64,
}

/// A task event, as the dev client keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The task's id.
    pub task_id: String,
    /// The task's name.
    pub task_name: String,
    /// What happened.
    pub message: String,
    /// Annotations (policy, hook, outcome, latency_us, …).
    pub annotations: BTreeMap<String, String>,
}

/// A StartTask that failed.
#[derive(Debug, Clone)]
pub struct StartFailure {
    /// The driver's message.
    pub message: String,
    /// Nomad's recoverable flag (None: no such detail).
    pub recoverable: Option<bool>,
    /// Task events the plugin sent about the task.
    pub events: Vec<Event>,
}

/// A task the plugin is running.
#[derive(Debug)]
pub struct RunningTask {
    /// What was sent in StartTask.
    pub config: pb::TaskConfig,
    /// The handle the plugin returned.
    pub handle: Option<pb::TaskHandle>,
    task: TaskFile,
    alloc: AllocDir,
    logs: LogPump,
    samples: Arc<Mutex<Vec<Sample>>>,
    stats: JoinHandle<()>,
    started: Instant,
}

impl RunningTask {
    /// Stats samples so far.
    pub fn samples(&self) -> Vec<Sample> {
        lock(&self.samples).clone()
    }

    /// The task's stdout so far.
    pub fn stdout(&self) -> Vec<u8> {
        lock(&self.logs.output).stdout.clone()
    }

    /// The name of the task's container (`<task>-<alloc id>`).
    pub fn container_name(&self) -> String {
        format!("{}-{}", self.config.name, self.config.alloc_id)
    }
}

/// How a task ended and what it produced.
#[derive(Debug, Clone)]
pub struct TaskOutcome {
    /// Exit code.
    pub exit_code: i32,
    /// Signal that ended it (0: none).
    pub signal: i32,
    /// Killed by the OOM killer.
    pub oom_killed: bool,
    /// An error WaitTask reported.
    pub err: String,
    /// Whether the dev client stopped it (Ctrl-C, a deadline).
    pub stopped: bool,
    /// Its stdout.
    pub stdout: Vec<u8>,
    /// Its stderr.
    pub stderr: Vec<u8>,
    /// Every stats sample.
    pub samples: Vec<Sample>,
    /// Its task events.
    pub events: Vec<Event>,
    /// From StartTask to its end.
    pub ran_for: Duration,
    /// Its container's name.
    pub container_name: String,
}

/// A configured plugin and the streams an agent keeps open to it.
#[derive(Debug)]
pub struct Session {
    plugin: launcher::Plugin,
    driver: DriverClient<Channel>,
    driver_name: String,
    node: Node,
    task_schema: hclspec::Spec,
    events: Arc<Mutex<Vec<Event>>>,
    fingerprint: Arc<Mutex<Option<pb::FingerprintResponse>>>,
    plugin_log: Arc<Mutex<Vec<String>>>,
    console: Console,
    stats_interval: Duration,
    background: Vec<JoinHandle<()>>,
}

impl Session {
    /// Launches and configures the plugin and waits for its first
    /// fingerprint (which is when it loads policy modules and starts its
    /// reconciler).
    pub async fn start(options: SessionOptions) -> anyhow::Result<Self> {
        let console = options.console;
        let env: Vec<(&str, &str)> = options
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let started = Instant::now();
        let mut plugin = launcher::launch(&options.binary, &options.args, &env).await?;
        console.step(&format!(
            "launched {} as a Nomad agent does (pid {}, handshake {} ms)",
            options.binary.display(),
            plugin.child.id().unwrap_or(0),
            started.elapsed().as_millis()
        ));
        let plugin_log = Arc::new(Mutex::new(Vec::new()));
        let mut background = Vec::new();
        if let Some(stderr) = plugin.stderr.take() {
            let sink = plugin_log.clone();
            background.push(tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let level = log_level(&line);
                    if !console.quiet
                        && (console.verbose || matches!(level.as_str(), "warn" | "error"))
                    {
                        println!("  {}", launcher::pretty_log_line(&line));
                    }
                    lock(&sink).push(line);
                }
            }));
        }
        let result = configure(&plugin, &options, &console).await;
        let (driver, driver_name, node, task_schema) = match result {
            Ok(parts) => parts,
            Err(err) => {
                let _ = plugin.child.start_kill();
                let _ = plugin.child.wait().await;
                return Err(err);
            }
        };
        let mut session = Self {
            plugin,
            driver,
            driver_name,
            node,
            task_schema,
            events: Arc::new(Mutex::new(Vec::new())),
            fingerprint: Arc::new(Mutex::new(None)),
            plugin_log,
            console,
            stats_interval: options.stats_interval,
            background,
        };
        session.watch_events().await?;
        session.watch_fingerprint().await?;
        Ok(session)
    }

    async fn watch_events(&mut self) -> anyhow::Result<()> {
        let mut stream = self
            .driver
            .task_events(pb::TaskEventsRequest {})
            .await
            .context("TaskEvents")?
            .into_inner();
        let (events, console) = (self.events.clone(), self.console);
        self.background.push(tokio::spawn(async move {
            while let Some(Ok(event)) = stream.next().await {
                let event = Event {
                    task_id: event.task_id,
                    task_name: event.task_name,
                    message: event.message,
                    annotations: event.annotations.into_iter().collect(),
                };
                let latency = event
                    .annotations
                    .get("latency_us")
                    .map(|us| format!("  [{us} µs]"))
                    .unwrap_or_default();
                console.detail(&format!(
                    "event {}: {}{latency}",
                    event.task_name, event.message
                ));
                lock(&events).push(event);
            }
        }));
        Ok(())
    }

    async fn watch_fingerprint(&mut self) -> anyhow::Result<()> {
        let mut stream = self
            .driver
            .fingerprint(pb::FingerprintRequest {})
            .await
            .context("Fingerprint")?
            .into_inner();
        let first = tokio::time::timeout(Duration::from_secs(30), stream.message())
            .await
            .context("no fingerprint within 30 s")?
            .context("Fingerprint")?
            .context("the fingerprint stream ended at once")?;
        self.console.step(&format!(
            "Fingerprint: {} — {}",
            health_name(first.health()),
            first.health_description
        ));
        for suffix in ["version", "runtimes"] {
            let key = format!("driver.{}.{suffix}", self.driver_name);
            if let Some(value) = attribute_text(&first, &key) {
                self.console.detail(&format!("{key} = {value}"));
            }
        }
        *lock(&self.fingerprint) = Some(first);
        let (latest, console) = (self.fingerprint.clone(), self.console);
        self.background.push(tokio::spawn(async move {
            while let Some(Ok(next)) = stream.next().await {
                let mut latest = lock(&latest);
                if latest.as_ref().map(pb::FingerprintResponse::health) != Some(next.health()) {
                    console.step(&format!(
                        "Fingerprint: {} — {}",
                        health_name(next.health()),
                        next.health_description
                    ));
                }
                *latest = Some(next);
            }
        }));
        Ok(())
    }

    /// The latest fingerprint.
    pub fn fingerprint(&self) -> Option<pb::FingerprintResponse> {
        lock(&self.fingerprint).clone()
    }

    /// The node runtimes the fingerprint reports (`driver.<name>.runtimes`).
    pub fn runtimes(&self) -> Vec<String> {
        let key = format!("driver.{}.runtimes", self.driver_name);
        self.fingerprint()
            .and_then(|f| attribute_text(&f, &key))
            .map(|list| list.split(',').map(str::to_owned).collect())
            .unwrap_or_default()
    }

    /// Task events about `task_id` so far.
    pub fn events_of(&self, task_id: &str) -> Vec<Event> {
        lock(&self.events)
            .iter()
            .filter(|e| e.task_id == task_id)
            .cloned()
            .collect()
    }

    /// The plugin's log lines so far (hclog JSON).
    pub fn plugin_log(&self) -> Vec<String> {
        lock(&self.plugin_log).clone()
    }

    /// Waits up to `timeout` for a plugin log line containing `needle`.
    pub async fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if lock(&self.plugin_log).iter().any(|l| l.contains(needle)) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Makes the alloc dir and FIFOs and starts `task`; its logs and stats
    /// stream from then on.
    pub async fn start_task(
        &self,
        task: &TaskFile,
    ) -> anyhow::Result<Result<RunningTask, StartFailure>> {
        let shaped = schema::shape(task.config.clone(), &self.task_schema);
        let alloc = AllocDir::create()?;
        let paths = alloc.add_task(&task.name)?;
        let config =
            alloc::task_config(task, &alloc, &paths, &self.node, cty::encode_json(&shaped));
        let logs = LogPump::start(&paths, &task.name, self.console)?;
        self.console.step(&format!(
            "StartTask {} (alloc {}, {} MHz, {} MiB{})",
            task.name,
            &alloc.id()[..8],
            task.cpu_mhz,
            task.memory_mb,
            if task.gpus > 0 {
                format!(", {} GPU(s) via NVIDIA_VISIBLE_DEVICES", task.gpus)
            } else {
                String::new()
            }
        ));
        let started = Instant::now();
        let response = self
            .driver
            .clone()
            .start_task(pb::StartTaskRequest {
                task: Some(config.clone()),
            })
            .await;
        let failure = match response {
            Ok(response) => {
                let response = response.into_inner();
                if response.result() == pb::start_task_response::Result::Success {
                    let handle = response.handle;
                    let samples = Arc::new(Mutex::new(Vec::new()));
                    let stats = self.watch_stats(&config, samples.clone()).await?;
                    self.console
                        .detail(&format!("started in {} ms", started.elapsed().as_millis()));
                    return Ok(Ok(RunningTask {
                        config,
                        handle,
                        task: task.clone(),
                        alloc,
                        logs,
                        samples,
                        stats,
                        started,
                    }));
                }
                StartFailure {
                    recoverable: Some(response.result() == pb::start_task_response::Result::Retry),
                    message: response.driver_error_msg,
                    events: Vec::new(),
                }
            }
            Err(status) => StartFailure {
                message: status.message().to_owned(),
                recoverable: recoverable_flag(&status),
                events: Vec::new(),
            },
        };
        // Events are sent beside the answer; give them a moment to arrive.
        let deadline = Instant::now() + Duration::from_millis(500);
        while self.events_of(&config.id).is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let failure = StartFailure {
            events: self.events_of(&config.id),
            ..failure
        };
        self.console.detail(&format!(
            "StartTask failed ({}): {}",
            match failure.recoverable {
                Some(true) => "recoverable",
                Some(false) => "not recoverable",
                None => "no recoverable flag",
            },
            failure.message
        ));
        logs.stop().await;
        alloc.remove()?;
        Ok(Err(failure))
    }

    async fn watch_stats(
        &self,
        config: &pb::TaskConfig,
        samples: Arc<Mutex<Vec<Sample>>>,
    ) -> anyhow::Result<JoinHandle<()>> {
        let mut stream = self
            .driver
            .clone()
            .task_stats(pb::TaskStatsRequest {
                task_id: config.id.clone(),
                collection_interval: Some(proto_duration(self.stats_interval)),
            })
            .await
            .context("TaskStats")?
            .into_inner();
        let (console, name) = (self.console, config.name.clone());
        Ok(tokio::spawn(async move {
            while let Some(Ok(response)) = stream.next().await {
                let Some(usage) = response.stats.and_then(|s| s.agg_resource_usage) else {
                    continue;
                };
                let cpu = usage.cpu.unwrap_or_default();
                let memory = usage.memory.unwrap_or_default();
                let sample = Sample {
                    cpu_percent: cpu.percent,
                    cpu_ticks: cpu.total_ticks,
                    rss: memory.rss,
                    memory_usage: memory.usage,
                };
                console.detail(&format!(
                    "stats {name}: cpu {:.1}% ({:.0} MHz), memory {} (rss {})",
                    sample.cpu_percent,
                    sample.cpu_ticks,
                    bytes(sample.memory_usage),
                    bytes(sample.rss)
                ));
                lock(&samples).push(sample);
            }
        }))
    }

    /// Waits for `task` to exit; if `stop` resolves first, stops it with its
    /// kill signal and timeout. Then destroys it and removes its alloc dir.
    pub async fn finish(
        &self,
        task: RunningTask,
        stop: impl Future<Output = String>,
    ) -> anyhow::Result<TaskOutcome> {
        let id = task.config.id.clone();
        let mut driver = self.driver.clone();
        let wait = async move { driver.wait_task(pb::WaitTaskRequest { task_id: id }).await };
        tokio::pin!(wait);
        let mut stopped = false;
        let result = tokio::select! {
            result = &mut wait => result,
            why = stop => {
                stopped = true;
                self.console.step(&format!(
                    "{why}: StopTask {} (signal {}, timeout {})",
                    task.config.name,
                    if task.task.kill_signal.is_empty() { "default" } else { &task.task.kill_signal },
                    humantime::format_duration(task.task.kill_timeout)
                ));
                self.driver
                    .clone()
                    .stop_task(pb::StopTaskRequest {
                        task_id: task.config.id.clone(),
                        timeout: Some(proto_duration(task.task.kill_timeout)),
                        signal: task.task.kill_signal.clone(),
                    })
                    .await
                    .context("StopTask")?;
                tokio::time::timeout(task.task.kill_timeout + STOP_SLACK, &mut wait)
                    .await
                    .context("the task did not end after StopTask")?
            }
        };
        let response = result.context("WaitTask")?.into_inner();
        let exit = response.result.unwrap_or_default();
        let ran_for = task.started.elapsed();
        self.console.step(&format!(
            "{} exited with code {}{}{} after {:.1} s",
            task.config.name,
            exit.exit_code,
            if exit.signal != 0 {
                format!(", signal {}", exit.signal)
            } else {
                String::new()
            },
            if exit.oom_killed { ", OOM-killed" } else { "" },
            ran_for.as_secs_f64()
        ));
        if !response.err.is_empty() {
            self.console
                .detail(&format!("WaitTask error: {}", response.err));
        }
        let container_name = task.container_name();
        let output = task.logs.drain().await;
        let destroyed = self
            .driver
            .clone()
            .destroy_task(pb::DestroyTaskRequest {
                task_id: task.config.id.clone(),
                force: true,
            })
            .await;
        task.stats.abort();
        let samples = lock(&task.samples).clone();
        let events = self.events_of(&task.config.id);
        task.alloc.remove()?;
        destroyed.context("DestroyTask")?;
        self.console.detail("destroyed; alloc dir removed");
        Ok(TaskOutcome {
            exit_code: exit.exit_code,
            signal: exit.signal,
            oom_killed: exit.oom_killed,
            err: response.err,
            stopped,
            stdout: output.stdout,
            stderr: output.stderr,
            samples,
            events,
            ran_for,
            container_name,
        })
    }

    /// GRPCController.Shutdown, as the agent does on exit; kills the
    /// plugin if it does not exit within 5 s.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        let asked = GrpcControllerClient::new(self.plugin.channel.clone())
            .shutdown(Empty {})
            .await;
        let status = tokio::time::timeout(Duration::from_secs(5), self.plugin.child.wait()).await;
        for task in &self.background {
            task.abort();
        }
        match (asked, status) {
            (Ok(_), Ok(Ok(status))) => {
                self.console.step(&format!("plugin shut down ({status})"));
                Ok(())
            }
            (asked, _) => {
                let _ = self.plugin.child.start_kill();
                let _ = self.plugin.child.wait().await;
                bail!(
                    "the plugin did not shut down cleanly ({}); it was killed",
                    asked
                        .err()
                        .map_or_else(|| "no exit within 5 s".to_owned(), |s| s.to_string())
                )
            }
        }
    }
}

async fn configure(
    plugin: &launcher::Plugin,
    options: &SessionOptions,
    console: &Console,
) -> anyhow::Result<(DriverClient<Channel>, String, Node, hclspec::Spec)> {
    let mut base = BasePluginClient::new(plugin.channel.clone());
    let info = base
        .plugin_info(base::PluginInfoRequest {})
        .await
        .context("PluginInfo")?
        .into_inner();
    let spec = base
        .config_schema(base::ConfigSchemaRequest {})
        .await
        .context("ConfigSchema")?
        .into_inner()
        .spec
        .context("the plugin returned no config schema")?;
    let node = Node::this_machine();
    let request = base::SetConfigRequest {
        msgpack_config: cty::encode_json(&schema::shape(options.config.clone(), &spec)),
        nomad_config: Some(node.nomad_config()),
        plugin_api_version: info
            .plugin_api_versions
            .first()
            .cloned()
            .unwrap_or_default(),
    };
    if let Err(status) = base.set_config(request).await {
        bail!(
            "the plugin refused {}: {}",
            options.config_label,
            status.message()
        );
    }
    console.step(&format!(
        "SetConfig: driver {:?} {} accepted {}",
        info.name, info.plugin_version, options.config_label
    ));
    let mut driver = DriverClient::new(plugin.channel.clone());
    driver.init(pb::InitRequest {}).await.context("Init")?;
    let task_schema = driver
        .task_config_schema(pb::TaskConfigSchemaRequest {})
        .await
        .context("TaskConfigSchema")?
        .into_inner()
        .spec
        .context("the plugin returned no task config schema")?;
    Ok((driver, info.name, node, task_schema))
}

/// Reads a task's two FIFOs and prints complete lines as they come.
#[derive(Debug)]
struct LogPump {
    output: Arc<Mutex<Output>>,
    readers: Vec<JoinHandle<()>>,
    printer: JoinHandle<()>,
}

#[derive(Debug, Default)]
struct Output {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    last: Option<Instant>,
}

impl LogPump {
    fn start(paths: &alloc::TaskPaths, name: &str, console: Console) -> anyhow::Result<Self> {
        let (tx, mut rx) = mpsc::channel::<(Stream, Vec<u8>)>(64);
        let readers = vec![
            alloc::read_fifo(&paths.stdout, Stream::Stdout, tx.clone())?,
            alloc::read_fifo(&paths.stderr, Stream::Stderr, tx)?,
        ];
        let output = Arc::new(Mutex::new(Output::default()));
        let (sink, name) = (output.clone(), name.to_owned());
        let printer = tokio::spawn(async move {
            let mut partial: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
            while let Some((stream, chunk)) = rx.recv().await {
                {
                    let mut out = lock(&sink);
                    match stream {
                        Stream::Stdout => out.stdout.extend_from_slice(&chunk),
                        Stream::Stderr => out.stderr.extend_from_slice(&chunk),
                    }
                    out.last = Some(Instant::now());
                }
                let (slot, mark) = match stream {
                    Stream::Stdout => (0, "│"),
                    Stream::Stderr => (1, "!"),
                };
                partial[slot].extend_from_slice(&chunk);
                while let Some(end) = partial[slot].iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = partial[slot].drain(..=end).collect();
                    console.detail(&format!(
                        "{name} {mark} {}",
                        String::from_utf8_lossy(&line[..line.len() - 1])
                    ));
                }
            }
        });
        Ok(Self {
            output,
            readers,
            printer,
        })
    }

    /// Reads until the FIFOs have been quiet for a moment, then stops.
    async fn drain(self) -> Output {
        let start = Instant::now();
        loop {
            let since = lock(&self.output).last.map_or(start, |t| t.max(start));
            if since.elapsed() >= LOG_DRAIN_QUIET || start.elapsed() >= LOG_DRAIN_MAX {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.stop().await;
        std::mem::take(&mut *lock(&self.output))
    }

    async fn stop(&self) {
        for reader in &self.readers {
            reader.abort();
        }
        // The printer ends once both readers (its senders) are gone.
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while !self.printer.is_finished() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
    }
}

fn proto_duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The `@level` of an hclog JSON line (`info` when it has none).
fn log_level(line: &str) -> String {
    serde_json::from_str::<Value>(line)
        .ok()
        .and_then(|v| v.get("@level").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| "info".to_owned())
}

fn health_name(health: HealthState) -> &'static str {
    match health {
        HealthState::Healthy => "healthy",
        HealthState::Unhealthy => "unhealthy",
        HealthState::Undetected => "undetected",
    }
}

/// A fingerprint attribute as text.
fn attribute_text(fingerprint: &pb::FingerprintResponse, key: &str) -> Option<String> {
    match fingerprint.attributes.get(key)?.value.as_ref()? {
        attribute::Value::StringVal(s) => Some(s.clone()),
        attribute::Value::IntVal(n) => Some(n.to_string()),
        attribute::Value::FloatVal(f) => Some(f.to_string()),
        attribute::Value::BoolVal(b) => Some(b.to_string()),
    }
}

fn bytes(n: u64) -> String {
    if n >= 1 << 20 {
        format!("{:.1} MiB", n as f64 / f64::from(1 << 20))
    } else {
        format!("{:.0} KiB", n as f64 / 1024.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_levels_and_sizes_read_as_shown() {
        assert_eq!(log_level(r#"{"@level":"warn","@message":"m"}"#), "warn");
        assert_eq!(log_level("not json"), "info");
        assert_eq!(bytes(3 << 20), "3.0 MiB");
        assert_eq!(bytes(2048), "2 KiB");
    }
}
