//! Stats rewriting by task identity: rescale CPU figures, tag samples so
//! the tag shows up in Nomad, and drop the samples of chosen jobs.
//!
//! The decision logic is [`transform`], a plain function of the
//! configuration, the task and the sample; the hook only reads the config
//! and logs. See README.md for the config keys.

use wasmdock_guest_sdk::stats_transform::{ResourceUsage, Sample};
use wasmdock_guest_sdk::{StatsTransform, TaskIdentity, host};

/// The breakdown key written when `tag` is not set.
const DEFAULT_TAG: &str = "tag:{namespace}/{job}/{group}/{task}";
/// The host accepts at most this many breakdown entries.
const MAX_BREAKDOWN: usize = 32;
/// Longest breakdown key this module writes, in bytes (the host's limit).
const MAX_TAG_LEN: usize = 128;

/// This module's `config { }` block, decoded.
#[derive(Debug, Clone, PartialEq)]
struct Config {
    /// `cpu_scale`: multiplier for CPU percent and total ticks.
    cpu_scale: f64,
    /// `jobs`: job patterns this module rescales and tags; empty = all.
    jobs: Vec<String>,
    /// `drop_jobs`: job patterns whose samples are dropped.
    drop_jobs: Vec<String>,
    /// `tag`: template of the breakdown key; `None` when set to "".
    tag: Option<String>,
    /// Problems found while reading the config (logged as warnings).
    warnings: Vec<String>,
}

impl Config {
    fn load(get: impl Fn(&str) -> Option<String>) -> Self {
        let mut warnings = Vec::new();
        let cpu_scale = match get("cpu_scale") {
            None => 1.0,
            Some(raw) => match raw.trim().parse::<f64>() {
                Ok(scale) if scale.is_finite() && scale >= 0.0 => scale,
                Ok(_) | Err(_) => {
                    warnings.push(format!(
                        "config cpu_scale = {raw:?} is not a finite, non-negative number; using 1.0"
                    ));
                    1.0
                }
            },
        };
        let list = |key: &str| -> Vec<String> {
            get(key)
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(str::to_owned)
                .collect()
        };
        let tag = match get("tag") {
            None => Some(DEFAULT_TAG.to_owned()),
            Some(raw) if raw.trim().is_empty() => None,
            Some(raw) => Some(raw.trim().to_owned()),
        };
        Self {
            cpu_scale,
            jobs: list("jobs"),
            drop_jobs: list("drop_jobs"),
            tag,
            warnings,
        }
    }
}

/// `pattern` is a job id, or a prefix followed by `*`.
fn job_matches(pattern: &str, job: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => job.starts_with(prefix),
        None => pattern == job,
    }
}

/// Replaces `{namespace}`, `{job}`, `{group}`, `{task}`, `{alloc_id}`,
/// `{node_id}` and `{node_name}` in one pass (values are never re-read, so
/// a job named `{task}` stays as it is). Unknown placeholders are kept.
fn render_tag(template: &str, task: &TaskIdentity) -> String {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let after = &rest[open..];
        let Some(close) = after.find('}') else {
            break;
        };
        out.push_str(&rest[..open]);
        let value = match &after[1..close] {
            "namespace" => Some(&task.namespace),
            "job" => Some(&task.job),
            "group" => Some(&task.group),
            "task" => Some(&task.task),
            "alloc_id" => Some(&task.alloc_id),
            "node_id" => Some(&task.node_id),
            "node_name" => Some(&task.node_name),
            _ => None,
        };
        match value {
            Some(value) => out.push_str(value),
            None => out.push_str(&after[..=close]),
        }
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    truncate(out, MAX_TAG_LEN)
}

/// Cuts `s` to at most `max` bytes on a character boundary, and replaces
/// NUL characters (which the host refuses).
fn truncate(mut s: String, max: usize) -> String {
    if s.contains('\0') {
        s = s.replace('\0', "\u{fffd}");
    }
    if s.len() > max {
        let cut = (0..=max)
            .rev()
            .find(|&i| s.is_char_boundary(i))
            .unwrap_or(0);
        s.truncate(cut);
    }
    s
}

/// `value * scale`, or `value` when the product is not finite.
fn scaled(value: f64, scale: f64) -> f64 {
    let product = value * scale;
    if product.is_finite() { product } else { value }
}

/// What happened to a sample, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Note {
    /// The job is listed in `drop_jobs`.
    Dropped,
    /// The breakdown was full, so the tag was not added.
    BreakdownFull,
}

/// Rewrites one sample; `None` drops it. The timestamp is never changed.
fn transform(
    config: &Config,
    task: &TaskIdentity,
    mut sample: Sample,
) -> (Option<Sample>, Option<Note>) {
    if config.drop_jobs.iter().any(|p| job_matches(p, &task.job)) {
        return (None, Some(Note::Dropped));
    }
    if !config.jobs.is_empty() && !config.jobs.iter().any(|p| job_matches(p, &task.job)) {
        return (Some(sample), None);
    }
    if config.cpu_scale != 1.0 {
        let cpu = &mut sample.usage.cpu;
        cpu.percent = scaled(cpu.percent, config.cpu_scale);
        cpu.total_ticks = scaled(cpu.total_ticks, config.cpu_scale);
    }
    let mut note = None;
    if let Some(template) = &config.tag {
        let key = render_tag(template, task);
        sample.breakdown.retain(|(k, _)| *k != key);
        if sample.breakdown.len() < MAX_BREAKDOWN {
            let usage: ResourceUsage = sample.usage;
            sample.breakdown.push((key, usage));
        } else {
            note = Some(Note::BreakdownFull);
        }
    }
    (Some(sample), note)
}

struct Policy;

impl StatsTransform for Policy {
    fn transform(task: TaskIdentity, sample: Sample) -> Option<Sample> {
        let config = Config::load(host::config);
        for warning in &config.warnings {
            host::warn(warning, &[]);
        }
        let (sample, note) = transform(&config, &task, sample);
        match note {
            Some(Note::Dropped) => host::debug(
                "dropped sample",
                &[("job", &task.job), ("task", &task.task)],
            ),
            Some(Note::BreakdownFull) => host::warn(
                "breakdown already holds the maximum number of entries; tag not added",
                &[("job", &task.job), ("task", &task.task)],
            ),
            None => {}
        }
        sample
    }
}

wasmdock_guest_sdk::export!(Policy => [stats_transform]);

#[cfg(test)]
mod tests {
    use super::*;
    use wasmdock_guest_sdk::stats_transform::{CpuFields, CpuUsage, MemoryFields, MemoryUsage};

    fn config(pairs: &[(&str, &str)]) -> Config {
        Config::load(|key| {
            pairs
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    fn task(job: &str) -> TaskIdentity {
        TaskIdentity {
            job: job.into(),
            group: "api".into(),
            task: "server".into(),
            alloc_id: "a1".into(),
            namespace: "prod".into(),
            node_id: "n1".into(),
            node_name: "node-1".into(),
        }
    }

    fn sample() -> Sample {
        Sample {
            timestamp_ns: 1_700_000_000_000_000_000,
            usage: ResourceUsage {
                cpu: CpuUsage {
                    system_mode: 1.0,
                    user_mode: 9.0,
                    total_ticks: 250.0,
                    throttled_periods: 0,
                    throttled_time: 0,
                    percent: 10.0,
                    measured: CpuFields::PERCENT | CpuFields::TOTAL_TICKS,
                },
                memory: MemoryUsage {
                    rss: 1 << 20,
                    cache: 0,
                    swap: 0,
                    usage: 2 << 20,
                    max_usage: 3 << 20,
                    kernel_usage: 0,
                    kernel_max_usage: 0,
                    measured: MemoryFields::RSS | MemoryFields::USAGE,
                },
            },
            breakdown: Vec::new(),
        }
    }

    fn keys(sample: &Sample) -> Vec<&str> {
        sample.breakdown.iter().map(|(k, _)| k.as_str()).collect()
    }

    #[test]
    fn default_config_tags_without_rescaling() {
        let (out, note) = transform(&config(&[]), &task("web"), sample());
        let out = out.expect("kept");
        assert_eq!(note, None);
        assert_eq!(out.timestamp_ns, sample().timestamp_ns);
        assert_eq!(out.usage.cpu.percent, 10.0);
        assert_eq!(keys(&out), ["tag:prod/web/api/server"]);
        assert_eq!(out.breakdown[0].1.memory.rss, 1 << 20);
    }

    #[test]
    fn rescales_cpu_and_copies_the_scaled_usage() {
        let cfg = config(&[("cpu_scale", "0.5"), ("tag", "team={job}")]);
        let (out, _) = transform(&cfg, &task("web"), sample());
        let out = out.expect("kept");
        assert_eq!(out.usage.cpu.percent, 5.0);
        assert_eq!(out.usage.cpu.total_ticks, 125.0);
        assert_eq!(out.usage.cpu.user_mode, 9.0);
        assert_eq!(out.timestamp_ns, sample().timestamp_ns);
        assert_eq!(keys(&out), ["team=web"]);
        assert_eq!(out.breakdown[0].1.cpu.percent, 5.0);
    }

    #[test]
    fn bad_scales_are_ignored_with_a_warning() {
        for raw in ["-1", "NaN", "inf", "lots", ""] {
            let cfg = config(&[("cpu_scale", raw)]);
            assert_eq!(cfg.cpu_scale, 1.0, "{raw}");
            assert_eq!(cfg.warnings.len(), 1, "{raw}");
        }
        assert_eq!(config(&[("cpu_scale", " 0 ")]).cpu_scale, 0.0);
    }

    #[test]
    fn job_filter_limits_rescaling_and_tagging() {
        let cfg = config(&[("cpu_scale", "2"), ("jobs", "batch-*, web")]);
        let (out, _) = transform(&cfg, &task("other"), sample());
        let out = out.expect("kept");
        assert_eq!(out.usage.cpu.percent, 10.0);
        assert!(out.breakdown.is_empty());

        for job in ["batch-nightly", "web"] {
            let (out, _) = transform(&cfg, &task(job), sample());
            assert_eq!(out.expect("kept").usage.cpu.percent, 20.0, "{job}");
        }
    }

    #[test]
    fn drops_listed_jobs() {
        let cfg = config(&[("drop_jobs", "noisy,tmp-*")]);
        assert_eq!(
            transform(&cfg, &task("noisy"), sample()).1,
            Some(Note::Dropped)
        );
        assert!(transform(&cfg, &task("tmp-1"), sample()).0.is_none());
        assert!(transform(&cfg, &task("noisy2"), sample()).0.is_some());
    }

    #[test]
    fn empty_tag_disables_tagging() {
        let (out, _) = transform(&config(&[("tag", "")]), &task("web"), sample());
        assert!(out.expect("kept").breakdown.is_empty());
    }

    #[test]
    fn replaces_an_existing_entry_and_respects_the_limit() {
        let mut input = sample();
        input
            .breakdown
            .push(("tag:prod/web/api/server".into(), input.usage));
        let (out, _) = transform(&config(&[]), &task("web"), input);
        assert_eq!(out.expect("kept").breakdown.len(), 1);

        let mut full = sample();
        full.breakdown = (0..MAX_BREAKDOWN)
            .map(|i| (format!("p{i}"), full.usage))
            .collect();
        let (out, note) = transform(&config(&[]), &task("web"), full);
        assert_eq!(note, Some(Note::BreakdownFull));
        assert_eq!(out.expect("kept").breakdown.len(), MAX_BREAKDOWN);
    }

    #[test]
    fn template_is_rendered_once_and_capped() {
        let mut t = task("{task}");
        t.task = "é".repeat(100);
        assert_eq!(render_tag("{job}/{nope}/{", &t), "{task}/{nope}/{");
        let long = render_tag("{task}", &t);
        assert!(long.len() <= MAX_TAG_LEN);
        assert_eq!(long, "é".repeat(MAX_TAG_LEN / 2));
    }

    #[test]
    fn huge_values_stay_finite() {
        let cfg = config(&[("cpu_scale", "1e308")]);
        let mut input = sample();
        input.usage.cpu.percent = 1e308;
        let (out, _) = transform(&cfg, &task("web"), input);
        assert_eq!(out.expect("kept").usage.cpu.percent, 1e308);
    }
}
