//! A policy guest that misbehaves on purpose, for the host's tests.
//!
//! It exports all four hooks. What it does is chosen by its config key
//! `behaviour` (README.md lists every value); without one, or with a value
//! it does not know, it behaves: allow, abstain, or the sample unchanged.

use core::hint::black_box;
use std::time::{Instant, SystemTime};

use wasmdock_guest_sdk::gpu_runtime::{self, DeviceRequest, Selection};
use wasmdock_guest_sdk::reconciler_match::{self, Container};
use wasmdock_guest_sdk::stats_transform::Sample;
use wasmdock_guest_sdk::task_admission::{self, Patch};
use wasmdock_guest_sdk::{
    GpuRuntime, KeyValue, ReconcilerMatch, StatsTransform, TaskAdmission, TaskIdentity, host,
};

/// `wasi:random/random`, imported directly: std reads it only once per
/// instance, and the `entropy` and `big-random` behaviours want more.
mod wasi_random {
    wit_bindgen::generate!({
        inline: r"
            package wasi:random@0.2.0;

            interface random {
                get-random-bytes: func(len: u64) -> list<u8>;
                get-random-u64: func() -> u64;
            }

            world entropy {
                import random;
            }
        ",
        world: "wasi:random/entropy@0.2.0",
    });

    pub(crate) use self::wasi::random::random::{get_random_bytes, get_random_u64};
}

/// The size of the `output` answers: 8 MiB of text.
const HUGE_TEXT: usize = 8 << 20;
/// The number of breakdown entries in the `output` stats answer.
const HUGE_BREAKDOWN: usize = 100_000;
/// Untrusted text quoted back (the `escape` report) is cut to this.
const MAX_REPORT: usize = 1024;

/// What the `behaviour` config key asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    /// Answer normally (missing or unknown `behaviour`).
    Benign,
    /// Spin forever without calling the host.
    Loop,
    /// Panic (a wasm trap).
    Trap,
    /// Allocate and touch 1 MiB chunks forever, keeping them all.
    Memory,
    /// Recurse until the stack runs out.
    Stack,
    /// Return a huge answer.
    Output,
    /// Call log, config-get and config-keys in an endless loop.
    HostCalls,
    /// Read wasi random and the clocks in an endless loop.
    Entropy,
    /// Ask wasi for 1 GiB of random bytes at once.
    BigRandom,
    /// Sleep for an hour at a time, forever (a blocking host call).
    Sleep,
    /// Return an answer that breaks the hook's rules.
    Invalid,
    /// Probe the sandbox (env, args, files, network) and report.
    Escape,
    /// Call `wasi:cli/exit` (std::process::exit).
    Exit,
    /// Write to stdout and stderr (the plugin's stdout is go-plugin's
    /// handshake channel), then answer normally.
    Stdio,
    /// Answer well-formed but beyond what a plugin config permits.
    Overreach,
}

impl Behaviour {
    fn parse(value: Option<&str>) -> Self {
        match value.map(str::trim) {
            Some("loop") => Self::Loop,
            Some("trap") => Self::Trap,
            Some("memory") => Self::Memory,
            Some("stack") => Self::Stack,
            Some("output") => Self::Output,
            Some("host-calls") => Self::HostCalls,
            Some("entropy") => Self::Entropy,
            Some("big-random") => Self::BigRandom,
            Some("sleep") => Self::Sleep,
            Some("invalid") => Self::Invalid,
            Some("escape") => Self::Escape,
            Some("exit") => Self::Exit,
            Some("stdio") => Self::Stdio,
            Some("overreach") => Self::Overreach,
            _ => Self::Benign,
        }
    }
}

/// What a hook answers once the misbehaviour (if it returns) is done.
#[derive(Debug)]
enum Answer {
    Benign,
    Output,
    Invalid(Option<String>),
    Escape(Probe),
    Overreach(Option<String>),
}

/// Reads the config and does what it says; returns only for behaviours
/// that end in an answer.
fn misbehave() -> Answer {
    match Behaviour::parse(host::config("behaviour").as_deref()) {
        Behaviour::Benign => Answer::Benign,
        Behaviour::Loop => spin(),
        Behaviour::Trap => panic!("hostile guest: trapping on purpose"),
        Behaviour::Memory => hoard(),
        Behaviour::Stack => {
            let depth = recurse(0);
            // Unreachable in practice: the stack runs out first.
            Answer::Escape(Probe {
                report: format!("recursed {depth} levels"),
                summary: format!("stack:{depth}"),
            })
        }
        Behaviour::Output => Answer::Output,
        Behaviour::HostCalls => flood_host(),
        Behaviour::Entropy => drain_entropy(),
        Behaviour::BigRandom => {
            let bytes = wasi_random::get_random_bytes(1 << 30);
            Answer::Escape(Probe {
                report: format!("got {} random bytes", bytes.len()),
                summary: format!("random:{}", bytes.len()),
            })
        }
        Behaviour::Sleep => sleep_forever(),
        Behaviour::Invalid => Answer::Invalid(host::config("field")),
        Behaviour::Overreach => Answer::Overreach(host::config("field")),
        Behaviour::Exit => exit_process(),
        Behaviour::Stdio => {
            write_stdio();
            Answer::Benign
        }
        Behaviour::Escape => {
            let probe = probe_sandbox();
            host::info("sandbox probe", &[("report", &probe.report)]);
            Answer::Escape(probe)
        }
    }
}

fn spin() -> ! {
    let mut n: u64 = 0;
    loop {
        n = black_box(n).wrapping_add(1);
    }
}

fn hoard() -> ! {
    let mut kept: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut chunk = vec![0_u8; 1 << 20];
        for byte in chunk.iter_mut().step_by(4096) {
            *byte = 1;
        }
        kept.push(black_box(chunk));
        black_box(&mut kept);
    }
}

fn recurse(depth: u64) -> u64 {
    // A frame with real stack use that the optimiser cannot fold away.
    let frame = black_box([depth; 64]);
    if black_box(depth) == u64::MAX {
        return frame[0];
    }
    recurse(depth + 1).wrapping_add(black_box(frame[63]))
}

fn flood_host() -> ! {
    let mut n: u64 = 0;
    loop {
        host::info("hostile guest: log flood", &[("n", &n.to_string())]);
        black_box(host::config("behaviour"));
        black_box(host::config_keys());
        n = n.wrapping_add(1);
    }
}

fn drain_entropy() -> ! {
    loop {
        black_box(wasi_random::get_random_bytes(4096));
        black_box(wasi_random::get_random_u64());
        black_box(Instant::now());
        black_box(SystemTime::now());
    }
}

#[expect(
    clippy::disallowed_methods,
    reason = "a guest has no async runtime; blocking the host is the point"
)]
fn sleep_forever() -> ! {
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

#[expect(
    clippy::disallowed_methods,
    reason = "exiting from inside a policy call is the misbehaviour under test"
)]
fn exit_process() -> ! {
    std::process::exit(3)
}

fn write_stdio() {
    use std::io::Write;
    let line = b"1|1|tcp|127.0.0.1:1|grpc\n";
    // Errors are expected (no stdio) and ignored: the answer still comes.
    for _ in 0..64 {
        let _ = std::io::stdout().write_all(line);
        let _ = std::io::stderr().write_all(b"hostile guest: stderr line\n");
    }
    let _ = std::io::stdout().flush();
}

/// What the `escape` probes found.
#[derive(Debug)]
struct Probe {
    /// Every probe and its outcome.
    report: String,
    /// At most 128 bytes (a breakdown key): `escape:env=N args=N open=…`,
    /// listing the file and network probes that succeeded, or `none`.
    summary: String,
}

/// Tries what a policy must not be able to do and says what happened.
/// (`cwd` is wasi-libc's own idea of the directory, `/`, not a capability.)
fn probe_sandbox() -> Probe {
    let mut opened: Vec<&str> = Vec::new();
    let mut outcome = |name: &'static str, result: std::io::Result<String>| match result {
        Ok(value) => {
            opened.push(name);
            format!("OPEN({value})")
        }
        Err(err) => format!("denied({})", err.kind()),
    };
    let env = std::env::vars_os().count();
    let args = std::env::args_os().count();
    let cwd = std::env::current_dir().map_or_else(
        |err| format!("denied({})", err.kind()),
        |path| format!("OPEN({})", path.display()),
    );
    let root = outcome(
        "read_dir",
        std::fs::read_dir("/").map(|dir| dir.count().to_string()),
    );
    let passwd = outcome(
        "read",
        std::fs::read("/etc/passwd").map(|bytes| bytes.len().to_string()),
    );
    let write = outcome(
        "write",
        std::fs::write("/tmp/wasmdock-hostile", b"x").map(|()| "written".to_owned()),
    );
    let tcp = outcome(
        "tcp",
        std::net::TcpStream::connect("127.0.0.1:4646").map(|_| "connected".to_owned()),
    );
    let udp = outcome(
        "udp",
        std::net::UdpSocket::bind("0.0.0.0:0").map(|_| "bound".to_owned()),
    );
    let mut report = format!(
        "env={env} args={args} cwd={cwd} read_dir(/)={root} read(/etc/passwd)={passwd} \
         write(/tmp)={write} tcp(127.0.0.1:4646)={tcp} udp.bind={udp}"
    );
    if report.len() > MAX_REPORT {
        let cut = (0..=MAX_REPORT)
            .rev()
            .find(|&i| report.is_char_boundary(i))
            .unwrap_or(0);
        report.truncate(cut);
    }
    let open = if opened.is_empty() {
        "none".to_owned()
    } else {
        opened.join(",")
    };
    let summary = format!("escape:env={env} args={args} open={open}");
    Probe { report, summary }
}

fn huge_text() -> String {
    "x".repeat(HUGE_TEXT)
}

/// Text that tries to forge log lines and terminal output (valid UTF-8,
/// no NUL: the contract allows it, so the host must escape it).
const FORGED: &str = "ok\nlevel=error msg=\"forged line\"\r\u{1b}[31mred\u{1b}[0m\u{2028}";
/// Text with a NUL, which the host refuses in every string.
const WITH_NUL: &str = "before\u{0}after";

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: value.to_owned(),
    }
}

/// `field` picks one rule to break; without it every rule is broken.
fn wants(field: Option<&str>, name: &str) -> bool {
    field.is_none_or(|f| f == name)
}

/// A patch that changes nothing, to fill in.
fn empty_patch() -> Patch {
    Patch {
        set_labels: Vec::new(),
        set_env: Vec::new(),
        unset_env: Vec::new(),
        runtime: None,
        memory_max_mb: None,
        pids_limit: None,
        cap_drop: Vec::new(),
        cap_add: Vec::new(),
        security_opt: Vec::new(),
    }
}

/// A patch of the right shape that asks for more than a plugin config
/// permits; `field` picks what (default `cap-add`).
fn overreaching_patch(field: Option<&str>) -> Patch {
    let mut patch = empty_patch();
    match field.unwrap_or("cap-add") {
        "runtime" => patch.runtime = Some("nvidia".to_owned()),
        "label" => patch.set_labels.push(KeyValue {
            key: "com.hashicorp.nomad.alloc_id".to_owned(),
            value: "someone-else".to_owned(),
        }),
        "env" => patch.unset_env.push("NOMAD_ALLOC_ID".to_owned()),
        "memory" => patch.memory_max_mb = Some(1 << 20),
        _ => patch.cap_add.push("SYS_ADMIN".to_owned()),
    }
    patch
}

fn invalid_patch(field: Option<&str>) -> Patch {
    let mut patch = empty_patch();
    if wants(field, "cap-add") {
        patch.cap_add = vec!["SYS_ADMIN".to_owned(), "ALL".to_owned()];
    }
    if wants(field, "runtime") {
        patch.runtime = Some("../../../bin/sh".to_owned());
    }
    if wants(field, "memory-max") {
        patch.memory_max_mb = Some(1);
    }
    if wants(field, "pids-limit") {
        patch.pids_limit = Some(-1);
    }
    if wants(field, "security-opt") {
        patch.security_opt = vec![
            "seccomp=unconfined".to_owned(),
            "apparmor=unconfined".to_owned(),
            "label=disable".to_owned(),
        ];
    }
    if wants(field, "env") {
        patch.set_env = vec![kv("A=B", "c"), kv("", "empty"), kv("LD_PRELOAD", "/x.so")];
        patch.unset_env = vec!["NOMAD_ALLOC_ID".to_owned()];
    }
    if wants(field, "labels") {
        patch.set_labels = vec![
            kv("com.hashicorp.nomad.alloc_id", "not-the-alloc"),
            kv("forged", FORGED),
        ];
    }
    if wants(field, "nul") {
        patch.set_labels.push(kv("nul", WITH_NUL));
    }
    patch
}

fn invalid_selection(field: Option<&str>) -> Selection {
    let mut selection = Selection {
        runtime: None,
        device_requests: Vec::new(),
    };
    if wants(field, "runtime") {
        selection.runtime = Some("../../../bin/sh".to_owned());
    }
    if wants(field, "device-requests") {
        selection.device_requests = (0..17)
            .map(|i| DeviceRequest {
                driver: "cdi".to_owned(),
                count: -5,
                device_ids: vec![format!("nvidia.com/gpu={i}")],
                capabilities: vec![vec!["gpu".to_owned()]],
                options: vec![kv(FORGED, FORGED)],
            })
            .collect();
    }
    selection
}

fn invalid_sample(field: Option<&str>, mut sample: Sample) -> Sample {
    if wants(field, "timestamp") {
        sample.timestamp_ns = sample.timestamp_ns.wrapping_add(3_600_000_000_000);
    }
    if wants(field, "breakdown") {
        let usage = sample.usage;
        sample.breakdown = (0..33).map(|i| (format!("p{i}"), usage)).collect();
    }
    if wants(field, "key") {
        let usage = sample.usage;
        sample.breakdown.push(("k".repeat(200), usage));
    }
    if wants(field, "nan") {
        sample.usage.cpu.percent = f64::NAN;
        sample.usage.cpu.total_ticks = f64::INFINITY;
        sample.usage.cpu.system_mode = -1.0;
    }
    sample
}

struct Hostile;

impl ReconcilerMatch for Hostile {
    fn decide(_container: Container) -> reconciler_match::Decision {
        use reconciler_match::Decision;
        match misbehave() {
            Answer::Benign => Decision::Abstain,
            // The dangerous answer: claiming a container, with a reason the
            // host must refuse to carry.
            Answer::Output => Decision::Ours(huge_text()),
            Answer::Invalid(field) => match field.as_deref() {
                Some("forged") => Decision::Ours(FORGED.to_owned()),
                _ => Decision::Ours(WITH_NUL.to_owned()),
            },
            Answer::Escape(probe) => Decision::NotOurs(probe.report),
            // Claiming every container would remove real ones on a
            // developer's engine: this guest never does.
            Answer::Overreach(_) => Decision::Abstain,
        }
    }
}

impl GpuRuntime for Hostile {
    fn select(_request: gpu_runtime::Request) -> gpu_runtime::Decision {
        use gpu_runtime::Decision;
        match misbehave() {
            Answer::Benign => Decision::Abstain,
            Answer::Output => Decision::Reject(huge_text()),
            Answer::Invalid(field) => Decision::Select(invalid_selection(field.as_deref())),
            Answer::Escape(probe) => Decision::Reject(probe.report),
            Answer::Overreach(_) => Decision::Select(Selection {
                runtime: Some(host::config("runtime").unwrap_or_else(|| "nvidia".to_owned())),
                device_requests: Vec::new(),
            }),
        }
    }
}

impl StatsTransform for Hostile {
    fn transform(_task: TaskIdentity, sample: Sample) -> Option<Sample> {
        match misbehave() {
            Answer::Benign | Answer::Overreach(_) => Some(sample),
            Answer::Output => {
                let usage = sample.usage;
                let breakdown = (0..HUGE_BREAKDOWN)
                    .map(|i| (format!("process-{i}"), usage))
                    .collect();
                Some(Sample {
                    breakdown,
                    ..sample
                })
            }
            Answer::Invalid(field) => Some(invalid_sample(field.as_deref(), sample)),
            Answer::Escape(probe) => {
                let usage = sample.usage;
                let mut sample = sample;
                sample.breakdown.push((probe.summary, usage));
                Some(sample)
            }
        }
    }
}

impl TaskAdmission for Hostile {
    fn admit(_request: task_admission::Request) -> task_admission::Decision {
        use task_admission::Decision;
        match misbehave() {
            Answer::Benign => Decision::Allow,
            Answer::Output => Decision::Deny(huge_text()),
            Answer::Invalid(field) => Decision::Patch(invalid_patch(field.as_deref())),
            Answer::Escape(probe) => Decision::Deny(probe.report),
            Answer::Overreach(field) => Decision::Patch(overreaching_patch(field.as_deref())),
        }
    }
}

wasmdock_guest_sdk::export!(Hostile => [reconciler_match, gpu_runtime, stats_transform, task_admission]);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_or_missing_behaviour_is_benign() {
        assert_eq!(Behaviour::parse(None), Behaviour::Benign);
        assert_eq!(Behaviour::parse(Some("")), Behaviour::Benign);
        assert_eq!(Behaviour::parse(Some("nice")), Behaviour::Benign);
        assert_eq!(Behaviour::parse(Some(" loop ")), Behaviour::Loop);
        assert_eq!(Behaviour::parse(Some("host-calls")), Behaviour::HostCalls);
        assert_eq!(Behaviour::parse(Some("stdio")), Behaviour::Stdio);
    }

    #[test]
    fn invalid_answers_break_the_chosen_rule_only() {
        let patch = invalid_patch(Some("cap-add"));
        assert_eq!(patch.cap_add, ["SYS_ADMIN", "ALL"]);
        assert!(patch.runtime.is_none() && patch.security_opt.is_empty());
        let patch = invalid_patch(None);
        assert!(patch.runtime.is_some() && patch.pids_limit == Some(-1));
        assert_eq!(invalid_selection(None).device_requests.len(), 17);
        assert!(
            invalid_selection(Some("runtime"))
                .device_requests
                .is_empty()
        );
    }
}
