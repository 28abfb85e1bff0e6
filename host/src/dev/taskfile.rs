//! The dev client's task file: one `task "name" { … }` block in Nomad
//! jobspec syntax (HCL, or JSON of the same shape), optionally inside
//! `job "…" { group "…" { … } }`, so a task can be copied out of a real job.
//!
//! ```hcl
//! task "hello" {
//!   config { image = "wasmdock-demo:1"  args = ["echo", "hi"] }
//!   env { GREETING = "hi" }
//!   resources {
//!     cpu = 200          # MHz
//!     memory = 64        # MiB
//!     memory_max = 128   # MiB
//!     device "nvidia/gpu" { count = 1 }
//!   }
//!   kill_timeout = "5s"
//! }
//! ```
//!
//! Only what a Nomad client would pass to the driver is read; anything else
//! is refused with its name, so a typo does not silently do nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde_json::{Map, Value};

/// Nomad's defaults for a task's resources and stop.
const DEFAULT_CPU_MHZ: i64 = 100;
const DEFAULT_MEMORY_MB: i64 = 300;
const DEFAULT_KILL_TIMEOUT: Duration = Duration::from_secs(5);
/// Most GPUs one task may ask the dev client for.
const MAX_GPUS: u64 = 64;

const TASK_KEYS: &[&str] = &[
    "driver",
    "config",
    "env",
    "resources",
    "kill_timeout",
    "kill_signal",
    "user",
];
const RESOURCE_KEYS: &[&str] = &["cpu", "memory", "memory_max", "device"];

/// One task, as the dev client will hand it to the driver.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskFile {
    /// Job name (`dev` when the file has no `job` block).
    pub job: String,
    /// Group name (`dev` when the file has no `group` block).
    pub group: String,
    /// Task name.
    pub name: String,
    /// The task's `config { }` block, as written (shaped and encoded later
    /// against the plugin's own schema).
    pub config: Value,
    /// The task's `env { }`.
    pub env: BTreeMap<String, String>,
    /// `resources.cpu`, MHz.
    pub cpu_mhz: i64,
    /// `resources.memory`, MiB.
    pub memory_mb: i64,
    /// `resources.memory_max`, MiB (0: none).
    pub memory_max_mb: i64,
    /// GPUs asked for with `device "nvidia/gpu"` blocks.
    pub gpus: u64,
    /// `kill_timeout`.
    pub kill_timeout: Duration,
    /// `kill_signal` (empty: the driver's default).
    pub kill_signal: String,
    /// `user`.
    pub user: String,
}

impl TaskFile {
    /// A task with Nomad's defaults and the given driver config.
    pub fn new(name: &str, config: Value) -> Self {
        Self {
            job: "dev".to_owned(),
            group: "dev".to_owned(),
            name: name.to_owned(),
            config,
            env: BTreeMap::new(),
            cpu_mhz: DEFAULT_CPU_MHZ,
            memory_mb: DEFAULT_MEMORY_MB,
            memory_max_mb: 0,
            gpus: 0,
            kill_timeout: DEFAULT_KILL_TIMEOUT,
            kill_signal: String::new(),
            user: String::new(),
        }
    }

    /// What Nomad's NVIDIA device plugin would put in the task's device
    /// environment for its GPUs (made-up ids), empty without GPUs.
    pub fn device_env(&self) -> BTreeMap<String, String> {
        if self.gpus == 0 {
            return BTreeMap::new();
        }
        let ids: Vec<String> = (0..self.gpus)
            .map(|n| format!("GPU-00000000-0000-4000-8000-{n:012x}"))
            .collect();
        BTreeMap::from([("NVIDIA_VISIBLE_DEVICES".to_owned(), ids.join(","))])
    }
}

/// Reads a task file: JSON if it starts with `{`, HCL otherwise.
pub fn parse(text: &str) -> anyhow::Result<TaskFile> {
    let value: Value = if text.trim_start().starts_with('{') {
        serde_json::from_str(text).context("the task file is not valid JSON")?
    } else {
        hcl::from_str(text).context("the task file is not valid HCL")?
    };
    let mut found = Vec::new();
    collect_tasks(&value, "dev", "dev", &mut found)?;
    let (job, group, name, body) = match found.len() {
        0 => bail!("the task file has no `task \"name\" {{ … }}` block"),
        1 => found.remove(0),
        n => bail!(
            "the task file has {n} tasks ({}); the dev client runs one",
            found
                .iter()
                .map(|(_, _, name, _)| name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    task(job, group, name, body)
}

type Found<'a> = (String, String, String, &'a Map<String, Value>);

/// Finds every task block under `value`, at the top level or inside `job`
/// and `group` blocks.
fn collect_tasks<'a>(
    value: &'a Value,
    job: &str,
    group: &str,
    found: &mut Vec<Found<'a>>,
) -> anyhow::Result<()> {
    let Value::Object(map) = value else {
        bail!("expected blocks, found {}", kind(value));
    };
    for (key, inner) in map {
        match key.as_str() {
            "job" => {
                for (label, body) in labelled(inner, "job")? {
                    collect_tasks(body, label, group, found)?;
                }
            }
            "group" => {
                for (label, body) in labelled(inner, "group")? {
                    collect_tasks(body, job, label, found)?;
                }
            }
            "task" => {
                for (label, body) in labelled(inner, "task")? {
                    let Value::Object(body) = body else {
                        bail!("task {label:?} is not a block");
                    };
                    found.push((job.to_owned(), group.to_owned(), label.to_owned(), body));
                }
            }
            // What a jobspec may hold around a task but the driver never sees.
            _ if job != "dev" || group != "dev" => {}
            other => bail!(
                "unexpected {other:?} at the top of the task file (expected `task`, `group` or `job`)"
            ),
        }
    }
    Ok(())
}

/// `{"label": {…}}` (or a list of such) → (label, body) pairs.
fn labelled<'a>(value: &'a Value, what: &str) -> anyhow::Result<Vec<(&'a str, &'a Value)>> {
    let mut out = Vec::new();
    let items: Vec<&Value> = match value {
        Value::Array(items) => items.iter().collect(),
        other => vec![other],
    };
    for item in items {
        let Value::Object(map) = item else {
            bail!("`{what}` must be a labelled block, like {what} \"name\" {{ … }}");
        };
        for (label, body) in map {
            out.push((label.as_str(), body));
        }
    }
    Ok(out)
}

fn task(
    job: String,
    group: String,
    name: String,
    body: &Map<String, Value>,
) -> anyhow::Result<TaskFile> {
    if name.is_empty() || name.contains('/') || name.len() > 128 {
        bail!("task name {name:?} must be 1-128 characters without '/'");
    }
    let context = |key: &str| format!("task {name:?}: {key}");
    if let Some(unknown) = body.keys().find(|k| !TASK_KEYS.contains(&k.as_str())) {
        bail!(
            "task {name:?}: unsupported key {unknown:?} (the dev client reads {})",
            TASK_KEYS.join(", ")
        );
    }
    let mut task = TaskFile::new(&name, Value::Object(Map::new()));
    task.job = job;
    task.group = group;
    if let Some(config) = body.get("config") {
        task.config = single_block(config).with_context(|| context("config"))?;
    }
    if let Some(env) = body.get("env") {
        let Value::Object(env) = single_block(env).with_context(|| context("env"))? else {
            bail!("{}: must be a block of strings", context("env"));
        };
        for (key, value) in env {
            let value = scalar_text(&value).with_context(|| context(&format!("env.{key}")))?;
            task.env.insert(key, value);
        }
    }
    if let Some(resources) = body.get("resources") {
        resources_into(
            &mut task,
            &single_block(resources).with_context(|| context("resources"))?,
        )
        .with_context(|| context("resources"))?;
    }
    if let Some(timeout) = body.get("kill_timeout") {
        let text = timeout.as_str().with_context(|| {
            format!(
                "{}: must be a duration like \"5s\"",
                context("kill_timeout")
            )
        })?;
        task.kill_timeout = humantime::parse_duration(text)
            .with_context(|| format!("{}: {text:?} is not a duration", context("kill_timeout")))?;
    }
    for (key, slot) in [
        ("kill_signal", &mut task.kill_signal),
        ("user", &mut task.user),
    ] {
        if let Some(value) = body.get(key) {
            *slot = value
                .as_str()
                .with_context(|| format!("{}: must be a string", context(key)))?
                .to_owned();
        }
    }
    Ok(task)
}

fn resources_into(task: &mut TaskFile, resources: &Value) -> anyhow::Result<()> {
    let Value::Object(map) = resources else {
        bail!("must be a block");
    };
    if let Some(unknown) = map.keys().find(|k| !RESOURCE_KEYS.contains(&k.as_str())) {
        bail!(
            "unsupported key {unknown:?} (the dev client reads {})",
            RESOURCE_KEYS.join(", ")
        );
    }
    for (key, slot, min) in [
        ("cpu", &mut task.cpu_mhz, 1),
        ("memory", &mut task.memory_mb, 10),
        ("memory_max", &mut task.memory_max_mb, 0),
    ] {
        if let Some(value) = map.get(key) {
            let n = value
                .as_i64()
                .with_context(|| format!("{key} must be a whole number"))?;
            if n < min || n > 1 << 30 {
                bail!("{key} = {n} is out of range ({min}..{})", 1_i64 << 30);
            }
            *slot = n;
        }
    }
    if task.memory_max_mb != 0 && task.memory_max_mb < task.memory_mb {
        bail!(
            "memory_max ({}) is below memory ({})",
            task.memory_max_mb,
            task.memory_mb
        );
    }
    if let Some(devices) = map.get("device") {
        for (label, body) in labelled(devices, "device")? {
            if !is_nvidia_gpu(label) {
                bail!(
                    "device {label:?}: the dev client only emulates NVIDIA GPUs (\"nvidia/gpu\", \"gpu\")"
                );
            }
            let count = match single_block(body)?.get("count") {
                None => 1,
                Some(count) => count
                    .as_u64()
                    .with_context(|| format!("device {label:?}: count must be a whole number"))?,
            };
            task.gpus = task.gpus.saturating_add(count);
        }
        if task.gpus > MAX_GPUS {
            bail!(
                "{} GPUs asked for; the dev client emulates at most {MAX_GPUS}",
                task.gpus
            );
        }
    }
    Ok(())
}

/// `gpu`, `nvidia/gpu` and `nvidia/gpu/<model>`, as Nomad's device names go.
fn is_nvidia_gpu(name: &str) -> bool {
    let parts: Vec<&str> = name.split('/').collect();
    matches!(
        parts.as_slice(),
        ["gpu"] | ["nvidia", "gpu"] | ["nvidia", "gpu", _]
    )
}

/// A block written once (HCL decoders give a list of one).
fn single_block(value: &Value) -> anyhow::Result<Value> {
    match value {
        Value::Array(items) if items.len() == 1 => Ok(items[0].clone()),
        Value::Array(items) if items.is_empty() => Ok(Value::Object(Map::new())),
        Value::Array(_) => bail!("the block is given more than once"),
        Value::Object(_) => Ok(value.clone()),
        other => bail!("must be a block, found {}", kind(other)),
    }
}

fn scalar_text(value: &Value) -> anyhow::Result<String> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => bail!("must be a string, found {}", kind(other)),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a bool",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a block",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_bare_task_block_reads_with_nomads_defaults() {
        let task = parse(
            r#"
task "hello" {
  driver = "wasmdock"
  config {
    image = "wasmdock-demo:1"
    args  = ["-c", "echo hi"]
  }
}
"#,
        )
        .unwrap();
        assert_eq!(task.name, "hello");
        assert_eq!((task.job.as_str(), task.group.as_str()), ("dev", "dev"));
        assert_eq!(
            task.config,
            json!({"image": "wasmdock-demo:1", "args": ["-c", "echo hi"]})
        );
        assert_eq!(
            (task.cpu_mhz, task.memory_mb, task.memory_max_mb),
            (100, 300, 0)
        );
        assert_eq!(task.kill_timeout, Duration::from_secs(5));
        assert!(task.device_env().is_empty());
    }

    #[test]
    fn a_task_inside_a_job_takes_its_job_and_group_names() {
        let task = parse(
            r#"
job "web" {
  datacenters = ["dc1"]
  group "frontend" {
    count = 1
    task "nginx" {
      config { image = "nginx:1" }
      env { PORT = 8080 }
      resources {
        cpu = 250
        memory = 64
        memory_max = 128
        device "nvidia/gpu" { count = 2 }
      }
      kill_timeout = "20s"
      kill_signal = "SIGQUIT"
    }
  }
}
"#,
        )
        .unwrap();
        assert_eq!(
            (task.job.as_str(), task.group.as_str(), task.name.as_str()),
            ("web", "frontend", "nginx")
        );
        assert_eq!(task.env["PORT"], "8080");
        assert_eq!(
            (task.cpu_mhz, task.memory_mb, task.memory_max_mb),
            (250, 64, 128)
        );
        assert_eq!(task.kill_timeout, Duration::from_secs(20));
        assert_eq!(task.kill_signal, "SIGQUIT");
        assert_eq!(task.gpus, 2);
        let devices = &task.device_env()["NVIDIA_VISIBLE_DEVICES"];
        assert_eq!(devices.split(',').count(), 2);
    }

    #[test]
    fn json_of_the_same_shape_reads_alike() {
        let hcl =
            parse("task \"t\" {\n  config { image = \"a:1\" }\n  env { A = \"b\" }\n}\n").unwrap();
        let json =
            parse(r#"{"task": {"t": {"config": {"image": "a:1"}, "env": {"A": "b"}}}}"#).unwrap();
        assert_eq!(hcl, json);
    }

    #[test]
    fn mistakes_are_refused_with_what_is_wrong() {
        for (text, needle) in [
            ("", "no `task"),
            ("task \"a\" {}\ntask \"b\" {}\n", "has 2 tasks (a, b)"),
            ("task \"a\" { confg {} }", "unsupported key \"confg\""),
            (
                "task \"a\" { resources { cores = 2 } }",
                "unsupported key \"cores\"",
            ),
            ("task \"a\" { resources { cpu = -1 } }", "out of range"),
            (
                "task \"a\" { resources { memory = 64\n memory_max = 32 } }",
                "below memory",
            ),
            (
                "task \"a\" { resources { device \"fpga\" {} } }",
                "only emulates NVIDIA",
            ),
            ("task \"a\" { kill_timeout = \"soon\" }", "not a duration"),
            ("task \"a\" { env { A = [1] } }", "env.A"),
            ("tsk \"a\" {}", "unexpected \"tsk\""),
            ("task \"a/b\" {}", "without '/'"),
            ("task \"a\" {", "not valid HCL"),
            ("{\"task\": 1}", "labelled block"),
        ] {
            // HCL wants a nested block on lines of its own.
            let text = text.replace("{ ", "{\n").replace(" }", "\n}");
            let err = format!("{:#}", parse(&text).unwrap_err());
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }
}
