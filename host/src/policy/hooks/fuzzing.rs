//! A fuzzing entry point for the validation of guests' answers.
//!
//! A guest's answer reaches the host as the WIT types wasmtime lifts from the
//! guest's memory; those types are private to the policy host. [`guest_output`]
//! builds one answer for one hook from an arbitrary byte string and runs the
//! very validation a real call runs (`from_wit` under a `Budget`), so a
//! fuzzer can drive every string, list, option and variant of the contract,
//! including sizes up to and beyond their limits. Nothing here is used by the
//! driver; it only reads the same code paths.
//!
//! # The byte format
//!
//! The bytes are read front to back; once they run out every read yields 0,
//! so any byte string (the empty one included) is a valid answer.
//!
//! * byte 0: the hook (`% 4`: reconciler-match, gpu-runtime, stats-transform,
//!   task-admission); byte 1: the output cap (`% 4`: 0 and 1 the default
//!   64 KiB, 2 a `u16` that follows, 3 1 MiB).
//! * A string starts with a tag (`% 8`): 0–3 a length byte and that many
//!   bytes, 4 a word of a small dictionary (index byte), 5 a long run of one
//!   character (character byte, then a length class byte), 6 a big-endian
//!   `u16` length and that many bytes, 7 the empty string. Bytes that are not
//!   UTF-8 are replaced with U+FFFD: a WIT string is always UTF-8.
//! * A list starts with a count byte: below `0xf0` it is `% 9` items read one
//!   by one; from `0xf0` on it is a big list (the limit, one past it, twice
//!   it, 1000 or 100 000 copies of one item read next), cut down so that one
//!   answer never takes more than 4 MiB to build.
//! * An option is one byte (odd: some). Integers and floats start with a tag
//!   byte choosing a small value, 8 raw bytes, or an edge value (`MIN`, `MAX`,
//!   NaN, infinities, -0).
//! * Variants start with a tag byte, taken modulo the number of cases in WIT
//!   order; flags are one byte of bits each; records are their fields in
//!   WIT order (a resource usage reads its two flag bytes first).

use super::{Budget, Output, Refusal, admission, gpu, reconciler, stats};
use crate::config::policy::Hook;
use crate::policy::DEFAULT_OUTPUT_LIMIT;
use crate::policy::bindings::{
    gpu_runtime, reconciler_match, stats_transform, task_admission, types,
};

/// Bytes one answer may take to build, so the input never makes the
/// harness itself allocate without bound.
const BUILD_CAP: usize = 4 << 20;

/// Words guests are likely to send, valid and not.
const WORDS: [&str; 24] = [
    "",
    "nvidia",
    "runc",
    "io.containerd.runc.v2",
    "cdi",
    "nvidia.com/gpu=0",
    "gpu",
    "A=B",
    "PATH",
    "team",
    "seccomp=unconfined",
    "seccomp=/etc/shadow",
    "apparmor=Unconfined",
    "label=disable",
    "label:disable",
    "no-new-privileges",
    "no-new-privileges:false",
    "NET_ADMIN",
    "SYS_ADMIN",
    "a\0b",
    "../runc",
    "run c",
    "\u{e9}t\u{e9}",
    "\u{10ffff}",
];

/// Characters a long string is made of.
const FILL: [char; 8] = ['a', '0', '-', '=', '\0', '\u{e9}', '\u{10ffff}', ' '];

/// Lengths of long strings, around every limit of the contract.
const LONG: [usize; 12] = [
    127, 128, 129, 255, 256, 257, 4095, 4096, 4097, 16_384, 16_385, 70_000,
];

/// The answer built from the bytes and what the validation made of it.
#[derive(Debug, Clone, PartialEq)]
pub struct GuestAnswer {
    /// The hook the answer is for.
    pub hook: Hook,
    /// The output cap the answer was charged against, in bytes.
    pub limit: usize,
    /// The validated decision, or why it was refused (`output-too-large`,
    /// or `invalid-output: <reason>`, as the policy host reports them).
    pub result: Result<Output, String>,
}

/// Builds one guest answer from `data` and validates it as the policy host
/// does after a call.
pub fn guest_output(data: &[u8]) -> GuestAnswer {
    let mut tape = Tape {
        data,
        pos: 0,
        built: 0,
    };
    let hook = Hook::ALL[usize::from(tape.byte() % 4)];
    let limit = match tape.byte() % 4 {
        0 | 1 => DEFAULT_OUTPUT_LIMIT,
        2 => usize::from(tape.u16()),
        _ => 1 << 20,
    };
    let mut budget = Budget::new(limit);
    let converted = match hook {
        Hook::ReconcilerMatch => {
            let raw = tape.reconciler();
            reconciler::Decision::from_wit(raw, &mut budget).map(Output::ReconcilerMatch)
        }
        Hook::GpuRuntime => {
            let raw = tape.gpu();
            gpu::Decision::from_wit(raw, &mut budget).map(Output::GpuRuntime)
        }
        Hook::StatsTransform => {
            let original = stats::Sample {
                timestamp_ns: tape.s64(),
                ..stats::Sample::default()
            };
            let raw = tape.stats(original.timestamp_ns);
            stats::Transformed::from_wit(raw, &original, &mut budget).map(Output::StatsTransform)
        }
        Hook::TaskAdmission => {
            let raw = tape.admission();
            admission::Decision::from_wit(raw, &mut budget).map(Output::TaskAdmission)
        }
    };
    GuestAnswer {
        hook,
        limit,
        result: converted.map_err(|refusal| match refusal {
            Refusal::TooLarge => "output-too-large".to_owned(),
            Refusal::Invalid(reason) => format!("invalid-output: {reason}"),
        }),
    }
}

/// Roughly what a value takes on the heap and inline, for the build cap.
trait Weight {
    fn weight(&self) -> usize;
}

impl Weight for String {
    fn weight(&self) -> usize {
        self.len() + 24
    }
}

impl Weight for types::KeyValue {
    fn weight(&self) -> usize {
        self.key.weight() + self.value.weight()
    }
}

impl<T: Weight> Weight for Vec<T> {
    fn weight(&self) -> usize {
        self.iter().map(Weight::weight).sum::<usize>() + 24
    }
}

impl Weight for gpu_runtime::DeviceRequest {
    fn weight(&self) -> usize {
        self.driver.weight()
            + self.device_ids.weight()
            + self.capabilities.weight()
            + self.options.weight()
            + 8
    }
}

impl Weight for (String, stats_transform::ResourceUsage) {
    fn weight(&self) -> usize {
        self.0.weight() + std::mem::size_of::<stats_transform::ResourceUsage>()
    }
}

struct Tape<'a> {
    data: &'a [u8],
    pos: usize,
    built: usize,
}

impl Tape<'_> {
    fn byte(&mut self) -> u8 {
        let byte = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos = self.pos.saturating_add(1);
        byte
    }

    fn bytes(&mut self, n: usize) -> &[u8] {
        let start = self.pos.min(self.data.len());
        let end = start.saturating_add(n).min(self.data.len());
        self.pos = self.pos.saturating_add(n);
        &self.data[start..end]
    }

    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.byte(), self.byte()])
    }

    fn raw64(&mut self) -> u64 {
        let mut out = [0u8; 8];
        for byte in &mut out {
            *byte = self.byte();
        }
        u64::from_be_bytes(out)
    }

    fn room(&self) -> usize {
        BUILD_CAP.saturating_sub(self.built)
    }

    fn string(&mut self) -> String {
        let text = match self.byte() % 8 {
            0..=3 => {
                let n = usize::from(self.byte());
                String::from_utf8_lossy(self.bytes(n)).into_owned()
            }
            4 => WORDS[usize::from(self.byte()) % WORDS.len()].to_owned(),
            5 => {
                let fill = FILL[usize::from(self.byte()) % FILL.len()];
                let len = LONG[usize::from(self.byte()) % LONG.len()].min(self.room());
                std::iter::repeat_n(fill, len / fill.len_utf8()).collect()
            }
            6 => {
                let n = usize::from(self.u16());
                String::from_utf8_lossy(self.bytes(n)).into_owned()
            }
            _ => String::new(),
        };
        self.built = self.built.saturating_add(text.len());
        text
    }

    fn option<T>(&mut self, read: impl FnOnce(&mut Self) -> T) -> Option<T> {
        (self.byte() % 2 == 1).then(|| read(self))
    }

    /// A list of at most 8 items read one by one, or a big list of copies
    /// of one item around `max`.
    fn list<T: Clone + Weight>(
        &mut self,
        max: usize,
        mut read: impl FnMut(&mut Self) -> T,
    ) -> Vec<T> {
        let count = self.byte();
        if count < 0xf0 {
            return (0..count % 9).map(|_| read(self)).collect();
        }
        let wanted = [
            max,
            max.saturating_add(1),
            max.saturating_mul(2),
            1000,
            100_000,
        ][usize::from(count) % 5];
        let one = read(self);
        let weight = one.weight().max(1);
        let count = wanted.min(self.room() / weight);
        self.built = self.built.saturating_add(count.saturating_mul(weight));
        vec![one; count]
    }

    fn s64(&mut self) -> i64 {
        const EDGES: [i64; 10] = [
            i64::MIN,
            i64::MIN + 1,
            -2,
            -1,
            0,
            1,
            i64::MAX,
            1 << 32,
            -(1 << 31),
            60_000_000_001,
        ];
        match self.byte() % 4 {
            0 => i64::from(self.byte() as i8),
            1 => i64::from_be_bytes(self.raw64().to_be_bytes()),
            2 => EDGES[usize::from(self.byte()) % EDGES.len()],
            _ => i64::from(self.u16()),
        }
    }

    fn u64(&mut self) -> u64 {
        u64::from_be_bytes(self.s64().to_be_bytes())
    }

    fn f64(&mut self) -> f64 {
        const EDGES: [f64; 9] = [
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            -0.0,
            -1.0,
            f64::MAX,
            f64::MIN_POSITIVE,
            12.5,
            -f64::MIN_POSITIVE,
        ];
        match self.byte() % 4 {
            0 => f64::from(self.byte()),
            1 => f64::from_bits(self.raw64()),
            2 => EDGES[usize::from(self.byte()) % EDGES.len()],
            _ => f64::from(self.u16()) / 100.0,
        }
    }

    fn key_value(&mut self) -> types::KeyValue {
        types::KeyValue {
            key: self.string(),
            value: self.string(),
        }
    }

    fn reconciler(&mut self) -> reconciler_match::Decision {
        match self.byte() % 3 {
            0 => reconciler_match::Decision::Ours(self.string()),
            1 => reconciler_match::Decision::NotOurs(self.string()),
            _ => reconciler_match::Decision::Abstain,
        }
    }

    fn gpu(&mut self) -> gpu_runtime::Decision {
        match self.byte() % 3 {
            0 => gpu_runtime::Decision::Select(gpu_runtime::Selection {
                runtime: self.option(Self::string),
                device_requests: self.list(gpu::MAX_DEVICE_REQUESTS, Self::device_request),
            }),
            1 => gpu_runtime::Decision::Abstain,
            _ => gpu_runtime::Decision::Reject(self.string()),
        }
    }

    fn device_request(&mut self) -> gpu_runtime::DeviceRequest {
        let items = gpu::MAX_DEVICE_ITEMS;
        gpu_runtime::DeviceRequest {
            driver: self.string(),
            count: self.s64(),
            device_ids: self.list(items, Self::string),
            capabilities: self.list(items, |tape| tape.list(items, Self::string)),
            options: self.list(items, Self::key_value),
        }
    }

    fn stats(&mut self, original_ns: i64) -> Option<stats_transform::Sample> {
        if self.byte().is_multiple_of(2) {
            return None;
        }
        let timestamp_ns = match self.byte() % 3 {
            0 => original_ns,
            1 => original_ns.saturating_add(self.s64().saturating_mul(1_000_000)),
            _ => self.s64(),
        };
        Some(stats_transform::Sample {
            timestamp_ns,
            usage: self.usage(),
            breakdown: self.list(stats::MAX_BREAKDOWN, |tape| (tape.string(), tape.usage())),
        })
    }

    fn usage(&mut self) -> stats_transform::ResourceUsage {
        use stats_transform::{CpuFields, MemoryFields};
        let cpu_bits = self.byte();
        let memory_bits = self.byte();
        let cpu_flags = [
            CpuFields::SYSTEM_MODE,
            CpuFields::USER_MODE,
            CpuFields::TOTAL_TICKS,
            CpuFields::THROTTLED_PERIODS,
            CpuFields::THROTTLED_TIME,
            CpuFields::PERCENT,
        ];
        let memory_flags = [
            MemoryFields::RSS,
            MemoryFields::CACHE,
            MemoryFields::SWAP,
            MemoryFields::USAGE,
            MemoryFields::MAX_USAGE,
            MemoryFields::KERNEL_USAGE,
            MemoryFields::KERNEL_MAX_USAGE,
        ];
        let cpu_measured = cpu_flags
            .iter()
            .enumerate()
            .filter(|(bit, _)| cpu_bits & (1 << bit) != 0)
            .fold(CpuFields::empty(), |all, (_, flag)| all | *flag);
        let memory_measured = memory_flags
            .iter()
            .enumerate()
            .filter(|(bit, _)| memory_bits & (1 << bit) != 0)
            .fold(MemoryFields::empty(), |all, (_, flag)| all | *flag);
        stats_transform::ResourceUsage {
            cpu: stats_transform::CpuUsage {
                system_mode: self.f64(),
                user_mode: self.f64(),
                total_ticks: self.f64(),
                throttled_periods: self.u64(),
                throttled_time: self.u64(),
                percent: self.f64(),
                measured: cpu_measured,
            },
            memory: stats_transform::MemoryUsage {
                rss: self.u64(),
                cache: self.u64(),
                swap: self.u64(),
                usage: self.u64(),
                max_usage: self.u64(),
                kernel_usage: self.u64(),
                kernel_max_usage: self.u64(),
                measured: memory_measured,
            },
        }
    }

    fn admission(&mut self) -> task_admission::Decision {
        let entries = admission::MAX_PATCH_ENTRIES;
        match self.byte() % 3 {
            0 => task_admission::Decision::Allow,
            1 => task_admission::Decision::Deny(self.string()),
            _ => task_admission::Decision::Patch(task_admission::Patch {
                set_labels: self.list(entries, Self::key_value),
                set_env: self.list(entries, Self::key_value),
                unset_env: self.list(entries, Self::string),
                runtime: self.option(Self::string),
                memory_max_mb: self.option(Self::s64),
                pids_limit: self.option(Self::s64),
                cap_drop: self.list(entries, Self::string),
                cap_add: self.list(entries, Self::string),
                security_opt: self.list(entries, Self::string),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_bytes_are_an_answer_and_the_empty_one_is_valid() {
        // Byte 0 = 0: reconciler-match; the decision tag 0 is `ours("")`.
        let answer = guest_output(&[]);
        assert_eq!(answer.hook, Hook::ReconcilerMatch);
        assert_eq!(answer.limit, DEFAULT_OUTPUT_LIMIT);
        assert_eq!(
            answer.result,
            Ok(Output::ReconcilerMatch(reconciler::Decision::Ours(
                String::new()
            )))
        );
    }

    #[test]
    fn big_lists_are_built_within_the_cap_and_refused() {
        // task-admission, default cap, patch, set-labels: 100 000 copies of
        // a label with a 70 000-byte key.
        let data = [3, 0, 2, 0xf4, 5, 0, 11, 7];
        let answer = guest_output(&data);
        assert_eq!(answer.hook, Hook::TaskAdmission);
        assert_eq!(answer.result, Err("output-too-large".to_owned()));
    }
}
