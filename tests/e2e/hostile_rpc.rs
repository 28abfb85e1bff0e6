//! Hostile input over gRPC, through the real plugin binary, its real socket
//! and a real engine. Proves that:
//!
//! * every method the plugin serves (listed in [`METHODS`], checked against
//!   the protos and the server's services) answers random bytes, valid
//!   requests truncated everywhere, fields of the wrong wire type, 3 MiB
//!   fields, messages above gRPC's 4 MiB default and above the plugin's own
//!   64 MiB limit, and empty messages with a clean gRPC status (or, for
//!   streams, a clean end or a stream that stays open as it should), never
//!   a hang; the calls and codes are printed per method;
//! * unknown task ids get NOT_FOUND naming the id on every task RPC, and
//!   RecoverTask with garbage handles or `driver_state` gets a clear error;
//! * ten concurrent StartTask of one task start it once, with one
//!   container, and the others get a clean error;
//! * ten StopTask and ten forced DestroyTask of one task at once all return
//!   promptly and cleanly, the container is gone, later calls say NOT_FOUND;
//! * throughout, a bystander task is unaffected: still running, its log
//!   lines consecutive with no gap or repeat, its TaskStats stream (opened
//!   before) still yielding samples, the plugin alive and its log free of
//!   panics.
//!
//! Accepted error codes: INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS,
//! FAILED_PRECONDITION, OUT_OF_RANGE (a message above the size limit),
//! RESOURCE_EXHAUSTED; INTERNAL only as tonic's protobuf decode error
//! ("failed to decode Protobuf message: …", gRPC's code for unparsable
//! requests); UNKNOWN only as a driver failure with its message (the code
//! `rpc/status.rs` gives engine failures), never a transport error. A
//! handler that panics shows up as a reset stream (CANCELLED, INTERNAL or
//! UNKNOWN with an h2 message) and as a `panic` line in the plugin's log;
//! both fail the tests.
//!
//! The random inputs come from a fixed seed, printed; set
//! `WASMDOCK_HOSTILE_SEED` to replay another one.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message as _;
use serde_json::json;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_stream::StreamExt as _;
use tonic::{Code, Status, Streaming};
use wasmdock_e2e::calls::{plugin, start};
use wasmdock_e2e::docker;
use wasmdock_e2e::images::BUSYBOX_1;
use wasmdock_e2e::plugin::{set_config_request, workspace_root};
use wasmdock_e2e::raw_grpc::RawClient;
use wasmdock_e2e::raw_grpc::wire::{self, Field};
use wasmdock_e2e::task::{FifoReader, duration};
use wasmdock_e2e::{PluginUnderTest, Task, TaskBuilder, run_id};
use wasmdock_host::rpc::proto::base as bpb;
use wasmdock_host::rpc::proto::drivers::{
    self as pb, exec_task_streaming_request::Setup, network_isolation_spec::NetworkIsolationMode,
};
use wasmdock_host::rpc::proto::plugin as gp;

const BASE: &str = "hashicorp.nomad.plugins.base.proto.BasePlugin";
const DRIVER: &str = "hashicorp.nomad.plugins.drivers.proto.Driver";
const CONTROLLER: &str = "plugin.GRPCController";
const STDIO: &str = "plugin.GRPCStdio";
const BROKER: &str = "plugin.GRPCBroker";
const HEALTH: &str = "grpc.health.v1.Health";

/// How a method streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Shape {
    Unary,
    ServerStreaming,
    Bidi,
}

/// Every method the plugin serves: the protos under `host/proto/` plus
/// `grpc.health.v1.Health` from tonic-health. A method added to a proto
/// fails [`the_method_list_is_every_method_the_plugin_serves`] until it is
/// listed here (and given a valid request in [`valid_request`]).
const METHODS: &[(&str, &str, Shape)] = &[
    (BASE, "PluginInfo", Shape::Unary),
    (BASE, "ConfigSchema", Shape::Unary),
    (BASE, "SetConfig", Shape::Unary),
    (DRIVER, "Init", Shape::Unary),
    (DRIVER, "TaskConfigSchema", Shape::Unary),
    (DRIVER, "Capabilities", Shape::Unary),
    (DRIVER, "Fingerprint", Shape::ServerStreaming),
    (DRIVER, "RecoverTask", Shape::Unary),
    (DRIVER, "StartTask", Shape::Unary),
    (DRIVER, "WaitTask", Shape::Unary),
    (DRIVER, "StopTask", Shape::Unary),
    (DRIVER, "DestroyTask", Shape::Unary),
    (DRIVER, "InspectTask", Shape::Unary),
    (DRIVER, "TaskStats", Shape::ServerStreaming),
    (DRIVER, "TaskEvents", Shape::ServerStreaming),
    (DRIVER, "Shutdown", Shape::Unary),
    (DRIVER, "SignalTask", Shape::Unary),
    (DRIVER, "ExecTask", Shape::Unary),
    (DRIVER, "ExecTaskStreaming", Shape::Bidi),
    (DRIVER, "CreateNetwork", Shape::Unary),
    (DRIVER, "DestroyNetwork", Shape::Unary),
    (CONTROLLER, "Shutdown", Shape::Unary),
    (STDIO, "StreamStdio", Shape::ServerStreaming),
    (BROKER, "StartStream", Shape::Bidi),
    (HEALTH, "Check", Shape::Unary),
    (HEALTH, "Watch", Shape::ServerStreaming),
];

/// The plugin's decode limit for BasePlugin and Driver (`rpc::MAX_DECODING_MESSAGE_SIZE`).
const PLUGIN_LIMIT: usize = 64 * 1024 * 1024;
/// tonic's default decode limit (go-plugin's services and health).
const DEFAULT_LIMIT: usize = 4 * 1024 * 1024;
/// Size of a "huge" field.
const HUGE: usize = 3 * 1024 * 1024;
/// At most this many huge-field variants per method.
const MAX_HUGE_VARIANTS: usize = 6;
/// Random message sizes (each twice).
const RANDOM_SIZES: &[usize] = &[1, 2, 3, 5, 8, 16, 64, 256, 1024, 8192, 65536];
/// How many cut points a valid request is truncated at (at most).
const MAX_CUTS: usize = 48;
/// Calls in flight at once.
const CONCURRENCY: usize = 8;
/// How long a stream may stay silent before it counts as open.
const OBSERVE: Duration = Duration::from_millis(400);
/// A call without any answer this long is a wedge.
const CALL_DEADLINE: Duration = Duration::from_secs(45);
/// An image on a registry nothing listens on: pulls fail at once and no
/// outside registry is ever contacted.
const UNREACHABLE_IMAGE: &str = "127.0.0.1:1/wasmdock-hostile/absent:1";
/// Default seed of the random inputs.
const DEFAULT_SEED: u64 = 0x005e_ed0f_4057_11e5;
/// Environment variable overriding the seed.
const SEED_ENV: &str = "WASMDOCK_HOSTILE_SEED";

fn path(service: &str, method: &str) -> String {
    format!("/{service}/{method}")
}

fn limit_of(service: &str) -> usize {
    if service == BASE || service == DRIVER {
        PLUGIN_LIMIT
    } else {
        DEFAULT_LIMIT
    }
}

// ---------------------------------------------------------------------------
// The method list against the protos and the server

/// `(service, method, shape)` of every rpc in the protos under `dir`.
fn proto_methods(dir: &Path) -> BTreeSet<(String, String, Shape)> {
    let mut found = BTreeSet::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("read the proto dir") {
            let path = entry.expect("a dir entry").path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "proto") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("read a proto");
            let mut package = String::new();
            let mut service = None::<String>;
            for line in text.lines().map(str::trim) {
                if let Some(rest) = line.strip_prefix("package ") {
                    package = rest.trim_end_matches(';').trim().to_owned();
                } else if let Some(rest) = line.strip_prefix("service ") {
                    let name = rest.trim_end_matches('{').trim();
                    service = Some(format!("{package}.{name}"));
                } else if let (Some(service), Some(rest)) = (&service, line.strip_prefix("rpc ")) {
                    let (name, rest) = rest.split_once('(').expect("rpc Name(");
                    let (request, response) = rest.split_once("returns").expect("returns");
                    let shape = match (
                        request.trim_start().starts_with("stream "),
                        response
                            .trim_start()
                            .trim_start_matches('(')
                            .starts_with("stream "),
                    ) {
                        (false, false) => Shape::Unary,
                        (false, true) => Shape::ServerStreaming,
                        (true, _) => Shape::Bidi,
                    };
                    found.insert((service.clone(), name.trim().to_owned(), shape));
                } else if line == "}" {
                    service = None;
                }
            }
        }
    }
    found
}

#[test]
fn the_method_list_is_every_method_the_plugin_serves() {
    let root = workspace_root();
    let mut expected = proto_methods(&root.join("host/proto"));
    // tonic-health's service, served beside ours (go-plugin pings it).
    expected.insert((HEALTH.to_owned(), "Check".to_owned(), Shape::Unary));
    expected.insert((
        HEALTH.to_owned(),
        "Watch".to_owned(),
        Shape::ServerStreaming,
    ));
    let listed: BTreeSet<_> = METHODS
        .iter()
        .map(|(s, m, shape)| ((*s).to_owned(), (*m).to_owned(), *shape))
        .collect();
    assert_eq!(listed.len(), METHODS.len(), "METHODS lists a method twice");
    let missing: Vec<_> = expected.difference(&listed).collect();
    let extra: Vec<_> = listed.difference(&expected).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "METHODS is out of step with the protos: missing {missing:?}, not served {extra:?}"
    );
    // Every service the server assembles is one of ours: one add_service per
    // service in METHODS.
    let serve = std::fs::read_to_string(root.join("host/src/plugin/mod.rs")).unwrap();
    let services: BTreeSet<_> = METHODS.iter().map(|(s, _, _)| *s).collect();
    assert_eq!(
        serve.matches(".add_service(").count(),
        services.len(),
        "host/src/plugin/mod.rs serves a service METHODS does not list (or lost one)"
    );
}

// ---------------------------------------------------------------------------
// Outcomes

#[derive(Debug, Clone, PartialEq, Eq)]
enum StreamEnd {
    /// The stream ended without a status.
    Clean,
    /// The stream ended with an error status.
    Status(Code, String),
    /// The stream stayed open (and silent for [`OBSERVE`]) or kept sending.
    Open,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// A unary answer.
    Ok,
    /// An error status (unary, or when a stream opens).
    Status(Code, String),
    /// A stream that opened: how many messages came and how it ended.
    Stream { messages: usize, end: StreamEnd },
    /// No answer within [`CALL_DEADLINE`].
    Hung,
}

fn is_decode_error(code: Code, message: &str) -> bool {
    code == Code::Internal && message.starts_with("failed to decode Protobuf message")
}

/// Whether a status is a clean answer to hostile input (see the module doc).
fn acceptable(code: Code, message: &str) -> bool {
    const TRANSPORT: &[&str] = &[
        "h2 protocol error",
        "transport error",
        "error reading a body",
        "grpc-status",
        "stream no longer needed",
        "panic",
    ];
    match code {
        Code::InvalidArgument
        | Code::NotFound
        | Code::AlreadyExists
        | Code::FailedPrecondition
        | Code::OutOfRange
        | Code::ResourceExhausted => true,
        Code::Internal => is_decode_error(code, message),
        Code::Unknown => !message.is_empty() && !TRANSPORT.iter().any(|t| message.contains(t)),
        _ => false,
    }
}

fn code_label(code: Code, message: &str) -> String {
    if is_decode_error(code, message) {
        "Internal(decode)".to_owned()
    } else {
        format!("{code:?}")
    }
}

impl Outcome {
    fn from_status(status: &Status) -> Self {
        Self::Status(status.code(), status.message().to_owned())
    }

    fn label(&self) -> String {
        match self {
            Self::Ok => "OK".to_owned(),
            Self::Status(code, message) => code_label(*code, message),
            Self::Stream { messages, end } => {
                let count = if *messages == 0 { "0" } else { "1+" };
                let end = match end {
                    StreamEnd::Clean => "end".to_owned(),
                    StreamEnd::Open => "open".to_owned(),
                    StreamEnd::Status(code, message) => code_label(*code, message),
                };
                format!("stream({count} msg)→{end}")
            }
            Self::Hung => "HUNG".to_owned(),
        }
    }

    /// `None` when clean, else why not.
    fn problem(&self) -> Option<String> {
        match self {
            Self::Ok
            | Self::Stream {
                end: StreamEnd::Clean | StreamEnd::Open,
                ..
            } => None,
            Self::Status(code, message)
            | Self::Stream {
                end: StreamEnd::Status(code, message),
                ..
            } => (!acceptable(*code, message)).then(|| format!("{code:?}: {message}")),
            Self::Hung => Some(format!("no answer within {CALL_DEADLINE:?}")),
        }
    }

    /// Whether the request reached the method's handler (it did not fail
    /// to decode and was not refused for its size).
    fn reached_handler(&self) -> bool {
        match self {
            Self::Status(code, message)
            | Self::Stream {
                messages: 0,
                end: StreamEnd::Status(code, message),
            } => !is_decode_error(*code, message) && *code != Code::OutOfRange,
            _ => true,
        }
    }
}

async fn observe(mut stream: Streaming<Bytes>) -> Outcome {
    let mut messages = 0;
    loop {
        match tokio::time::timeout(OBSERVE, stream.message()).await {
            Err(_) => {
                return Outcome::Stream {
                    messages,
                    end: StreamEnd::Open,
                };
            }
            Ok(Ok(Some(_))) => {
                messages += 1;
                if messages >= 3 {
                    return Outcome::Stream {
                        messages,
                        end: StreamEnd::Open,
                    };
                }
            }
            Ok(Ok(None)) => {
                return Outcome::Stream {
                    messages,
                    end: StreamEnd::Clean,
                };
            }
            Ok(Err(status)) => {
                return Outcome::Stream {
                    messages,
                    end: StreamEnd::Status(status.code(), status.message().to_owned()),
                };
            }
        }
    }
}

/// Sends `messages` (one, except for bidi calls) to a method.
async fn call(
    client: &RawClient,
    service: &str,
    method: &str,
    shape: Shape,
    messages: Vec<Bytes>,
) -> Outcome {
    let path = path(service, method);
    let run = async {
        match shape {
            Shape::Unary => {
                let body = messages.into_iter().next().unwrap_or_default();
                match client.unary(&path, body).await {
                    Ok(_) => Outcome::Ok,
                    Err(status) => Outcome::from_status(&status),
                }
            }
            Shape::ServerStreaming => {
                let body = messages.into_iter().next().unwrap_or_default();
                match client.server_streaming(&path, body).await {
                    Ok(stream) => observe(stream).await,
                    Err(status) => Outcome::from_status(&status),
                }
            }
            Shape::Bidi => match client.streaming(&path, messages).await {
                Ok(stream) => observe(stream).await,
                Err(status) => Outcome::from_status(&status),
            },
        }
    };
    tokio::time::timeout(CALL_DEADLINE, run)
        .await
        .unwrap_or(Outcome::Hung)
}

// ---------------------------------------------------------------------------
// Inputs

/// splitmix64: small, fast and the same everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(len);
        out
    }
}

fn seed() -> u64 {
    std::env::var(SEED_ENV)
        .ok()
        .and_then(|s| {
            let s = s.trim();
            s.strip_prefix("0x")
                .map_or_else(|| s.parse().ok(), |hex| u64::from_str_radix(hex, 16).ok())
        })
        .unwrap_or(DEFAULT_SEED)
}

/// FNV-1a, to give each method its own stream of random inputs.
fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// One hostile call's input.
struct Variant {
    kind: &'static str,
    messages: Vec<Bytes>,
}

impl Variant {
    fn one(kind: &'static str, message: Vec<u8>) -> Self {
        Self {
            kind,
            messages: vec![Bytes::from(message)],
        }
    }

    fn preview(&self) -> String {
        self.messages
            .iter()
            .map(|m| {
                let head: String = m.iter().take(24).map(|b| format!("{b:02x}")).collect();
                format!(
                    "{} bytes [{head}{}]",
                    m.len(),
                    if m.len() > 24 { "…" } else { "" }
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The same field with every other wire type, and (for length-delimited
/// fields) content that is not UTF-8.
fn retypes(field: &Field) -> Vec<Field> {
    let n = field.number;
    match field.wire_type {
        wire::LEN => vec![
            Field::varint(n, 1),
            Field::fixed32(n, 1),
            Field::fixed64(n, 1),
            Field::len(n, vec![0xff, 0xfe, 0xc0, 0x80]),
        ],
        wire::VARINT => vec![Field::len(n, "hostile"), Field::fixed64(n, u64::MAX)],
        _ => vec![Field::varint(n, u64::MAX), Field::len(n, vec![0xff; 3])],
    }
}

/// `valid` with one field at a time (down to `depth` levels of nested
/// messages) given the wrong wire type.
fn wrong_wire_types(valid: &[u8], depth: usize) -> Vec<Vec<u8>> {
    let Some(fields) = wire::fields(valid) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, field) in fields.iter().enumerate() {
        if !seen.insert(field.number) {
            continue;
        }
        for replacement in retypes(field) {
            let mut copy = fields.clone();
            copy[i] = replacement;
            out.push(wire::encode(&copy));
        }
        if depth > 0
            && field.wire_type == wire::LEN
            && wire::fields(&field.value).is_some_and(|f| !f.is_empty())
        {
            for nested in wrong_wire_types(&field.value, depth - 1) {
                let mut copy = fields.clone();
                copy[i] = Field::len(field.number, nested);
                out.push(wire::encode(&copy));
            }
        }
    }
    out
}

/// Paths (field indexes) of the length-delimited fields of `valid`, top
/// level and one level down.
fn len_field_paths(valid: &[u8]) -> Vec<Vec<usize>> {
    let Some(fields) = wire::fields(valid) else {
        return Vec::new();
    };
    let mut top = Vec::new();
    let mut nested = Vec::new();
    for (i, field) in fields.iter().enumerate() {
        if field.wire_type != wire::LEN {
            continue;
        }
        top.push(vec![i]);
        if let Some(inner) = wire::fields(&field.value) {
            for (j, f) in inner.iter().enumerate() {
                if f.wire_type == wire::LEN {
                    nested.push(vec![i, j]);
                }
            }
        }
    }
    top.extend(nested);
    top
}

/// `valid` with the length-delimited field at `path` replaced by `value`.
fn replace_at(valid: &[u8], path: &[usize], value: &[u8]) -> Vec<u8> {
    let mut fields = wire::fields(valid).expect("a well-formed message");
    let (first, rest) = path.split_first().expect("a path");
    let field = &mut fields[*first];
    field.value = if rest.is_empty() {
        value.to_vec()
    } else {
        replace_at(&field.value, rest, value)
    };
    wire::encode(&fields)
}

/// Bytes no decoder accepts, whatever the message.
fn malformed_samples(valid: &[u8]) -> Vec<Vec<u8>> {
    let mut huge_len = vec![0x0a];
    wire::put_varint(&mut huge_len, 1 << 62);
    let mut long_varint = vec![0x08];
    long_varint.extend([0xff; 10]);
    long_varint.push(0x01);
    let mut with_bad_tail = valid.to_vec();
    with_bad_tail.push(0x0e);
    vec![
        vec![0x0e],             // field 1, wire type 6
        vec![0x0f, 0x00],       // field 1, wire type 7
        vec![0x00, 0x01],       // field 0
        vec![0x0c],             // a group end with no start
        vec![0x80],             // a truncated key
        vec![0x0a, 0x05, 0x61], // a length beyond the end
        huge_len,
        long_varint,
        with_bad_tail,
    ]
}

/// A message of more than `limit` bytes: `valid` and a field claiming more
/// bytes than follow it (so it is malformed too).
fn oversized(valid: &[u8], limit: usize) -> Vec<u8> {
    let mut out = valid.to_vec();
    wire::put_key(&mut out, 16, wire::LEN);
    wire::put_varint(&mut out, (limit + 64) as u64);
    out.resize(out.len() + limit + 1, 0x61);
    out
}

/// Every hostile input for one method except the oversized one.
fn variants(shape: Shape, valid: &[u8], rng: &mut Rng) -> Vec<Variant> {
    let mut out = vec![Variant::one("empty", Vec::new())];
    for &size in RANDOM_SIZES {
        for _ in 0..2 {
            out.push(Variant::one("random", rng.bytes(size)));
        }
    }
    if valid.len() > 1 {
        let step = (valid.len() / MAX_CUTS).max(1);
        for cut in (1..valid.len()).step_by(step) {
            out.push(Variant::one("truncated", valid[..cut].to_vec()));
        }
    }
    for bytes in wrong_wire_types(valid, 2) {
        out.push(Variant::one("wire-type", bytes));
    }
    for bytes in malformed_samples(valid) {
        out.push(Variant::one("malformed", bytes));
    }
    let huge = vec![b'a'; HUGE];
    let paths = len_field_paths(valid);
    if paths.is_empty() {
        let mut bytes = valid.to_vec();
        Field::len(15, huge.clone()).encode_into(&mut bytes);
        out.push(Variant::one("huge", bytes));
    }
    for path in paths.iter().take(MAX_HUGE_VARIANTS) {
        out.push(Variant::one("huge", replace_at(valid, path, &huge)));
    }
    // Above tonic's default 4 MiB limit (within the plugin's own for its
    // services): an unknown field of 5 MiB.
    let mut above_default = valid.to_vec();
    Field::len(15, vec![0u8; DEFAULT_LIMIT + 1024 * 1024]).encode_into(&mut above_default);
    out.push(Variant::one("5MiB", above_default));
    if shape == Shape::Bidi {
        // A valid first message, then hostile ones.
        for size in [3, 64, 4096] {
            out.push(Variant {
                kind: "2nd-msg",
                messages: vec![Bytes::copy_from_slice(valid), Bytes::from(rng.bytes(size))],
            });
        }
        out.push(Variant {
            kind: "2nd-msg",
            messages: vec![Bytes::copy_from_slice(valid), Bytes::from(vec![0x0e])],
        });
    }
    out
}

// ---------------------------------------------------------------------------
// Valid requests

/// What the valid requests aim at.
struct Targets {
    /// The running bystander (read-only methods only aim at it).
    bystander: Task,
    /// A task that is never started (its image is unreachable).
    ghost: Task,
    /// The plugin config (SetConfig's valid request re-sends it).
    config: serde_json::Value,
}

/// A `driver_state` of the right shape naming a container that does not exist.
fn missing_container_state(container: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "version": 1,
        "container_id": container,
        "image_id": "",
        "network": null,
        "started_at": 0.0,
    }))
    .unwrap()
}

fn missing_container() -> String {
    format!("wasmdock-hostile-missing-{}", run_id())
}

/// A valid request for each method in [`METHODS`].
fn valid_request(service: &str, method: &str, t: &Targets) -> Vec<u8> {
    let ghost = &t.ghost;
    let bystander = t.bystander.id().to_owned();
    let echo = vec!["echo".to_owned(), "hostile".to_owned()];
    match (service, method) {
        (BASE, "PluginInfo") => bpb::PluginInfoRequest {}.encode_to_vec(),
        (BASE, "ConfigSchema") => bpb::ConfigSchemaRequest {}.encode_to_vec(),
        (BASE, "SetConfig") => set_config_request(&t.config).encode_to_vec(),
        (DRIVER, "Init") => pb::InitRequest {}.encode_to_vec(),
        (DRIVER, "TaskConfigSchema") => pb::TaskConfigSchemaRequest {}.encode_to_vec(),
        (DRIVER, "Capabilities") => pb::CapabilitiesRequest {}.encode_to_vec(),
        (DRIVER, "Fingerprint") => pb::FingerprintRequest {}.encode_to_vec(),
        (DRIVER, "TaskEvents") => pb::TaskEventsRequest {}.encode_to_vec(),
        (DRIVER, "Shutdown") => pb::ShutdownRequest {}.encode_to_vec(),
        (DRIVER, "RecoverTask") => ghost
            .recover_request(pb::TaskHandle {
                version: 1,
                config: Some(ghost.config.clone()),
                state: pb::TaskState::Running.into(),
                driver_state: missing_container_state(&missing_container()),
            })
            .encode_to_vec(),
        (DRIVER, "StartTask") => ghost.start_request().encode_to_vec(),
        (DRIVER, "WaitTask") => ghost.wait_request().encode_to_vec(),
        (DRIVER, "StopTask") => ghost
            .stop_request(Duration::from_secs(1), "SIGTERM")
            .encode_to_vec(),
        (DRIVER, "DestroyTask") => ghost.destroy_request(true).encode_to_vec(),
        (DRIVER, "InspectTask") => t.bystander.inspect_request().encode_to_vec(),
        (DRIVER, "TaskStats") => pb::TaskStatsRequest {
            task_id: bystander,
            collection_interval: Some(duration(Duration::from_millis(500))),
        }
        .encode_to_vec(),
        (DRIVER, "SignalTask") => ghost.signal_request("SIGHUP").encode_to_vec(),
        (DRIVER, "ExecTask") => pb::ExecTaskRequest {
            task_id: bystander,
            command: echo,
            timeout: Some(duration(Duration::from_secs(10))),
        }
        .encode_to_vec(),
        (DRIVER, "ExecTaskStreaming") => pb::ExecTaskStreamingRequest {
            setup: Some(Setup {
                task_id: bystander,
                command: echo,
                tty: false,
            }),
            tty_size: None,
            stdin: None,
        }
        .encode_to_vec(),
        (DRIVER, "CreateNetwork") => pb::CreateNetworkRequest {
            alloc_id: ghost.alloc_id().to_owned(),
            hostname: "hostile".to_owned(),
        }
        .encode_to_vec(),
        (DRIVER, "DestroyNetwork") => pb::DestroyNetworkRequest {
            alloc_id: ghost.alloc_id().to_owned(),
            isolation_spec: Some(pb::NetworkIsolationSpec {
                mode: NetworkIsolationMode::Group.into(),
                path: "/var/run/docker/netns/none".to_owned(),
                labels: [(
                    "docker_sandbox_container_id".to_owned(),
                    missing_container(),
                )]
                .into(),
                hosts_config: None,
            }),
        }
        .encode_to_vec(),
        (CONTROLLER, "Shutdown") | (STDIO, "StreamStdio") => gp::Empty {}.encode_to_vec(),
        (BROKER, "StartStream") => gp::ConnInfo {
            service_id: 1,
            network: "unix".to_owned(),
            address: "/nonexistent/wasmdock-hostile.sock".to_owned(),
            knock: None,
        }
        .encode_to_vec(),
        // grpc.health.v1.HealthCheckRequest { service = 1 }
        (HEALTH, "Check" | "Watch") => wire::encode(&[Field::len(1, "plugin")]),
        _ => panic!("no valid request for {service}/{method}: add one"),
    }
}

// ---------------------------------------------------------------------------
// The bystander

/// A long-running task that must not notice anything: it prints
/// `line <n>` every 100 ms, its logs go through FIFOs, and a TaskStats
/// stream follows it from the start.
struct Bystander {
    task: Task,
    stdout: FifoReader,
    _stderr: FifoReader,
    samples: Arc<Mutex<Vec<Instant>>>,
    stats: tokio::task::JoinHandle<Option<Status>>,
}

impl Bystander {
    async fn start(plugin: &PluginUnderTest) -> Self {
        let script = "i=0; while true; do i=$((i+1)); echo \"line $i\"; usleep 100000; done";
        let task = TaskBuilder::new(
            "bystander",
            json!({ "image": BUSYBOX_1, "command": "sh", "args": ["-c", script] }),
        )
        .log_fifos()
        .build()
        .unwrap();
        let (stdout, stderr) = task.log_readers().unwrap();
        start(plugin, &task).await;
        assert!(
            stdout.wait_for("line 3\n", Duration::from_secs(30)).await,
            "the bystander logs: {:?}",
            stdout.text()
        );
        let mut stream = plugin
            .driver()
            .task_stats(pb::TaskStatsRequest {
                task_id: task.id().to_owned(),
                collection_interval: Some(duration(Duration::from_millis(500))),
            })
            .await
            .expect("TaskStats of the bystander")
            .into_inner();
        let samples = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&samples);
        let stats = tokio::spawn(async move {
            loop {
                match stream.next().await {
                    Some(Ok(_)) => sink
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(Instant::now()),
                    Some(Err(status)) => return Some(status),
                    None => return None,
                }
            }
        });
        Self {
            task,
            stdout,
            _stderr: stderr,
            samples,
            stats,
        }
    }

    fn last_line(&self) -> u64 {
        self.stdout
            .text()
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("line ")?.parse().ok())
            .unwrap_or(0)
    }

    /// Everything the hostile calls (which ended at `since`) must not have
    /// disturbed.
    async fn check(self, plugin: &PluginUnderTest, since: Instant) {
        const WAIT: Duration = Duration::from_secs(30);
        // Still running.
        let inspect = plugin
            .driver()
            .inspect_task(self.task.inspect_request())
            .await
            .expect("InspectTask of the bystander")
            .into_inner();
        assert_eq!(
            inspect.task.expect("a status").state(),
            pb::TaskState::Running,
            "the bystander still runs; its container: {}",
            container_state(&self.task)
        );
        // Still logging, with every line once and in order from the first.
        let next = self.last_line() + 3;
        assert!(
            self.stdout.wait_for(&format!("line {next}\n"), WAIT).await,
            "the bystander still logs (waiting for line {next}); last: {}",
            self.last_line()
        );
        let text = self.stdout.text();
        let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
        let mut expected = 1u64;
        for line in complete.lines() {
            assert_eq!(
                line,
                format!("line {expected}"),
                "the bystander's log has a gap or a repeat"
            );
            expected += 1;
        }
        eprintln!(
            "bystander: {} consecutive log lines, {} stats samples",
            expected - 1,
            self.samples
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .len()
        );
        // Its stats stream, opened before, still yields samples.
        let deadline = Instant::now() + WAIT;
        while !self
            .samples
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .any(|at| *at > since)
        {
            assert!(
                !self.stats.is_finished(),
                "the bystander's TaskStats stream ended: {:?}",
                self.stats.await
            );
            assert!(
                Instant::now() < deadline,
                "no stats sample for the bystander after the hostile calls"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.stats.abort();
        assert_plugin_healthy(plugin).await;
        plugin
            .driver()
            .destroy_task(self.task.destroy_request(true))
            .await
            .expect("DestroyTask of the bystander");
    }
}

/// The engine's view of a task's container (`State`), for failure messages.
fn container_state(task: &Task) -> String {
    match docker::container_inspect(&task.container_name()) {
        Ok(Some(facts)) => facts["State"].to_string(),
        Ok(None) => "gone".to_owned(),
        Err(err) => format!("cannot inspect: {err:#}"),
    }
}

/// The plugin process is alive, answers, and never logged a panic.
async fn assert_plugin_healthy(plugin: &PluginUnderTest) {
    assert!(plugin.exit_status().is_none(), "the plugin was reaped");
    let pid = plugin.pid().expect("the plugin process has a pid");
    let stat =
        std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the plugin process exists");
    let state = stat.rsplit_once(") ").map(|(_, rest)| rest.chars().next());
    assert!(
        !matches!(state, Some(Some('Z' | 'X'))),
        "the plugin process is dead: {stat}"
    );
    plugin
        .base()
        .plugin_info(bpb::PluginInfoRequest {})
        .await
        .expect("PluginInfo still answers");
    let panics: Vec<String> = plugin
        .stderr_lines()
        .into_iter()
        .filter(|l| l.contains("panicked") || l.contains("\"panic: "))
        .collect();
    assert!(
        panics.is_empty(),
        "the plugin panicked:\n{}",
        panics.join("\n")
    );
}

/// The plugin config of these tests: the network pause image is on a
/// registry nothing listens on, so a hostile CreateNetwork never pulls
/// from outside or leaves a pause container behind.
fn hostile_config() -> serde_json::Value {
    json!({ "infra_image": UNREACHABLE_IMAGE })
}

fn ghost_task() -> Task {
    TaskBuilder::new(
        "ghost",
        json!({ "image": UNREACHABLE_IMAGE, "command": "sleep", "args": ["1000"] }),
    )
    .build()
    .unwrap()
}

// ---------------------------------------------------------------------------
// Hostile bytes on every method

#[derive(Default)]
struct Tally {
    calls: usize,
    labels: BTreeMap<String, usize>,
    /// One message per error label (decode errors aside), shortened.
    examples: BTreeMap<String, String>,
    reached_handler: usize,
    decode_errors: usize,
    withheld: usize,
}

#[tokio::test]
async fn every_method_answers_hostile_bytes_with_a_clean_status() {
    let plugin = plugin(hostile_config()).await;
    let bystander = Bystander::start(&plugin).await;
    let targets = Targets {
        bystander: bystander.task.clone(),
        ghost: ghost_task(),
        config: plugin.config().clone(),
    };
    let client = RawClient::new(plugin.channel());
    let seed = seed();
    wasmdock_e2e::figure!("hostile inputs: seed {seed:#x} (replay with {SEED_ENV}={seed:#x})");

    // Every service answers an unknown method of its own with UNIMPLEMENTED
    // (so the method list is what routes, not a catch-all).
    let services: BTreeSet<&str> = METHODS.iter().map(|(s, _, _)| *s).collect();
    for service in &services {
        let outcome = call(
            &client,
            service,
            "NoSuchMethod",
            Shape::Unary,
            vec![Bytes::new()],
        )
        .await;
        assert!(
            matches!(&outcome, Outcome::Status(Code::Unimplemented, _)),
            "{service}/NoSuchMethod: {outcome:?}"
        );
    }

    let began = Instant::now();
    let mut tallies: BTreeMap<String, Tally> = BTreeMap::new();
    let mut problems = Vec::new();
    let semaphore = Arc::new(Semaphore::new(CONCURRENCY));
    for &(service, method, shape) in METHODS {
        let name = format!("{}/{method}", service.rsplit('.').next().unwrap_or(service));
        let valid = valid_request(service, method, &targets);
        let mut rng = Rng(seed ^ fnv(&path(service, method)));
        let mut inputs = variants(shape, &valid, &mut rng);
        let mut oversize = Variant::one("oversize", oversized(&valid, limit_of(service)));
        let tally = tallies.entry(name.clone()).or_default();
        if (service, method) == (CONTROLLER, "Shutdown") {
            // Anything it decodes stops the plugin: only send what no
            // decoder accepts.
            let before = inputs.len();
            inputs.retain(|v| v.messages.iter().all(|m| wire::definitely_malformed(m)));
            tally.withheld = before - inputs.len();
            assert!(inputs.len() >= 20, "too few malformed inputs for {name}");
            assert!(
                oversize
                    .messages
                    .iter()
                    .all(|m| wire::definitely_malformed(m))
            );
        }
        if shape == Shape::Bidi {
            oversize.messages.truncate(1);
        }
        inputs.push(oversize);

        let mut calls = JoinSet::new();
        for variant in inputs {
            let permit = Arc::clone(&semaphore).acquire_owned().await.unwrap();
            // The oversized message runs alone (it is 64 MiB).
            let alone = variant.kind == "oversize";
            if alone {
                while let Some(joined) = calls.join_next().await {
                    record(&name, joined.expect("a call task"), tally, &mut problems);
                }
            }
            let client = client.clone();
            calls.spawn(async move {
                let outcome = call(&client, service, method, shape, variant.messages.clone()).await;
                drop(permit);
                (variant, outcome)
            });
            if alone {
                // Collect it at once, freeing its memory.
                let Some(joined) = calls.join_next().await else {
                    continue;
                };
                record(&name, joined.expect("a call task"), tally, &mut problems);
            }
        }
        while let Some(joined) = calls.join_next().await {
            record(&name, joined.expect("a call task"), tally, &mut problems);
        }
        if (service, method) == (BASE, "SetConfig") {
            // Some hostile SetConfigs are valid configs (an empty message is
            // every default): the real one goes back at once.
            plugin
                .base()
                .set_config(set_config_request(&targets.config))
                .await
                .expect("SetConfig with the real config again");
        }
    }
    let elapsed = began.elapsed();

    // The summary table.
    let total: usize = tallies.values().map(|t| t.calls).sum();
    wasmdock_e2e::figure!("hostile calls: {total} in {elapsed:.1?}");
    wasmdock_e2e::figure!("{:<28} {:>5}  outcomes", "method", "calls");
    for (name, tally) in &tallies {
        let outcomes: Vec<String> = tally
            .labels
            .iter()
            .map(|(l, n)| format!("{l}×{n}"))
            .collect();
        let withheld = if tally.withheld > 0 {
            format!("  ({} decodable inputs withheld)", tally.withheld)
        } else {
            String::new()
        };
        wasmdock_e2e::figure!(
            "{name:<28} {:>5}  {}{withheld}",
            tally.calls,
            outcomes.join(" ")
        );
        for (label, message) in &tally.examples {
            wasmdock_e2e::figure!("{:<36}{label}: {message}", "");
        }
    }
    assert!(
        problems.is_empty(),
        "{} hostile calls got no clean answer:\n{}",
        problems.len(),
        problems.join("\n")
    );
    for (name, tally) in &tallies {
        // The broker drains its inbound stream and drops what it cannot
        // decode; its answer stream stays open until shutdown either way.
        if !name.starts_with("GRPCBroker/") {
            assert!(
                tally.decode_errors > 0,
                "{name}: no input was refused by the decoder"
            );
        }
        if !name.starts_with("GRPCController/") {
            assert!(
                tally.reached_handler > 0,
                "{name}: no input reached the handler"
            );
        }
    }

    // The raw path reaches the handlers: a raw InspectTask of the bystander
    // decodes to its running status.
    let raw = client
        .unary(
            &path(DRIVER, "InspectTask"),
            Bytes::from(valid_request(DRIVER, "InspectTask", &targets)),
        )
        .await
        .expect("raw InspectTask");
    let inspect = pb::InspectTaskResponse::decode(raw).expect("an InspectTaskResponse");
    let status = inspect.task.expect("a status");
    assert_eq!(status.id, targets.bystander.id());
    assert_eq!(
        status.state(),
        pb::TaskState::Running,
        "the bystander runs; its container: {}",
        container_state(&targets.bystander)
    );
    // Nothing the hostile calls sent was started or made a pause container.
    assert!(
        docker::containers_with_label("com.hashicorp.nomad.alloc_id", targets.ghost.alloc_id())
            .unwrap()
            .is_empty(),
        "a hostile call made a container"
    );
    bystander.check(&plugin, began + elapsed).await;
}

fn record(
    name: &str,
    (variant, outcome): (Variant, Outcome),
    tally: &mut Tally,
    problems: &mut Vec<String>,
) {
    tally.calls += 1;
    *tally.labels.entry(outcome.label()).or_default() += 1;
    if let Outcome::Status(code, message)
    | Outcome::Stream {
        end: StreamEnd::Status(code, message),
        ..
    } = &outcome
        && !is_decode_error(*code, message)
    {
        let short: String = message.chars().take(140).collect();
        tally.examples.entry(outcome.label()).or_insert(short);
    }
    if outcome.reached_handler() {
        tally.reached_handler += 1;
    }
    if matches!(&outcome, Outcome::Status(code, message) if is_decode_error(*code, message))
        || matches!(&outcome, Outcome::Stream { end: StreamEnd::Status(code, message), .. } if is_decode_error(*code, message))
    {
        tally.decode_errors += 1;
    }
    // A 64 MiB frame on a bidi call: the plugin answers OUT_OF_RANGE while
    // the client is still sending, and the client's h2 stack sometimes sees
    // the stream reset before that answer ("operation was canceled").
    let client_side_race = variant.kind == "oversize"
        && matches!(&outcome, Outcome::Status(Code::Cancelled, m) if m == "operation was canceled");
    if client_side_race {
        return;
    }
    if let Some(problem) = outcome.problem() {
        problems.push(format!(
            "{name} [{}] {}: {problem}",
            variant.kind,
            variant.preview()
        ));
    }
}

// ---------------------------------------------------------------------------
// Unknown task ids and garbage handles

/// Task ids no task has: empty, unknown, non-ASCII, with control characters.
fn unknown_ids() -> Vec<String> {
    vec![
        String::new(),
        format!("no-such-task-{}", run_id()),
        format!("{}/ghost/deadbeef", wasmdock_e2e::ids::uuid_v4()),
        "tâche/🦀/ghost".to_owned(),
        "line\nbreak\ttab\0nul".to_owned(),
    ]
}

/// NOT_FOUND whose message names `id`.
fn assert_not_found<T: std::fmt::Debug>(what: &str, id: &str, result: Result<T, Status>) {
    match result {
        Err(status) => {
            assert_eq!(
                status.code(),
                Code::NotFound,
                "{what} of {id:?}: {status:?}"
            );
            assert!(
                status.message().contains("not found") && status.message().contains(id),
                "{what} of {id:?} names the id: {:?}",
                status.message()
            );
        }
        Ok(answer) => panic!("{what} of unknown id {id:?} answered {answer:?}"),
    }
}

/// A status with `code` whose message contains `needle`.
fn assert_status(
    what: &str,
    result: Result<impl std::fmt::Debug, Status>,
    code: Code,
    needle: &str,
) {
    match result {
        Err(status) => assert!(
            status.code() == code && status.message().contains(needle),
            "{what}: expected {code:?} mentioning {needle:?}, got {status:?}"
        ),
        Ok(answer) => panic!("{what}: expected {code:?}, got {answer:?}"),
    }
}

#[tokio::test]
async fn unknown_task_ids_and_garbage_handles_get_clear_errors() {
    let plugin = plugin(hostile_config()).await;
    let bystander = Bystander::start(&plugin).await;
    let began = Instant::now();
    let driver = plugin.driver();
    let mut calls = 0usize;

    for id in unknown_ids() {
        let id = id.as_str();
        assert_not_found(
            "WaitTask",
            id,
            driver
                .clone()
                .wait_task(pb::WaitTaskRequest {
                    task_id: id.to_owned(),
                })
                .await,
        );
        assert_not_found(
            "StopTask",
            id,
            driver
                .clone()
                .stop_task(pb::StopTaskRequest {
                    task_id: id.to_owned(),
                    timeout: Some(duration(Duration::from_secs(1))),
                    signal: String::new(),
                })
                .await,
        );
        for force in [false, true] {
            assert_not_found(
                "DestroyTask",
                id,
                driver
                    .clone()
                    .destroy_task(pb::DestroyTaskRequest {
                        task_id: id.to_owned(),
                        force,
                    })
                    .await,
            );
        }
        assert_not_found(
            "InspectTask",
            id,
            driver
                .clone()
                .inspect_task(pb::InspectTaskRequest {
                    task_id: id.to_owned(),
                })
                .await,
        );
        assert_not_found(
            "TaskStats",
            id,
            driver
                .clone()
                .task_stats(pb::TaskStatsRequest {
                    task_id: id.to_owned(),
                    collection_interval: Some(duration(Duration::from_secs(1))),
                })
                .await,
        );
        assert_not_found(
            "SignalTask",
            id,
            driver
                .clone()
                .signal_task(pb::SignalTaskRequest {
                    task_id: id.to_owned(),
                    signal: "SIGHUP".to_owned(),
                })
                .await,
        );
        assert_not_found(
            "ExecTask",
            id,
            driver
                .clone()
                .exec_task(pb::ExecTaskRequest {
                    task_id: id.to_owned(),
                    command: vec!["true".to_owned()],
                    timeout: Some(duration(Duration::from_secs(5))),
                })
                .await,
        );
        let setup = pb::ExecTaskStreamingRequest {
            setup: Some(Setup {
                task_id: id.to_owned(),
                command: vec!["sh".to_owned()],
                tty: true,
            }),
            tty_size: None,
            stdin: None,
        };
        assert_not_found(
            "ExecTaskStreaming",
            id,
            driver
                .clone()
                .exec_task_streaming(tokio_stream::iter(vec![setup]))
                .await,
        );
        calls += 10;
    }

    // ExecTaskStreaming must start with a setup.
    assert_status(
        "ExecTaskStreaming without messages",
        driver
            .clone()
            .exec_task_streaming(tokio_stream::iter(Vec::new()))
            .await
            .map(|_| ()),
        Code::InvalidArgument,
        "setup",
    );
    let stdin_first = pb::ExecTaskStreamingRequest {
        setup: None,
        tty_size: None,
        stdin: Some(pb::ExecTaskStreamingIoOperation {
            data: b"ls\n".to_vec(),
            close: false,
        }),
    };
    assert_status(
        "ExecTaskStreaming starting with stdin",
        driver
            .clone()
            .exec_task_streaming(tokio_stream::iter(vec![stdin_first]))
            .await
            .map(|_| ()),
        Code::InvalidArgument,
        "setup",
    );
    // A bad signal on the running bystander is refused and changes nothing.
    for signal in ["SIGNOPE", "99999", "-1", "SIG\u{0}KILL"] {
        assert_status(
            "SignalTask with a bad signal",
            driver
                .clone()
                .signal_task(bystander.task.signal_request(signal))
                .await
                .map(|_| ()),
            Code::InvalidArgument,
            "signal",
        );
        assert_status(
            "StopTask with a bad signal",
            driver
                .clone()
                .stop_task(bystander.task.stop_request(Duration::from_secs(1), signal))
                .await
                .map(|_| ()),
            Code::InvalidArgument,
            "signal",
        );
        calls += 2;
    }

    // RecoverTask with garbage handles: a clear error, and nothing tracked.
    let ghost = ghost_task();
    let handle = |driver_state: Vec<u8>| pb::TaskHandle {
        version: 1,
        config: Some(ghost.config.clone()),
        state: pb::TaskState::Running.into(),
        driver_state,
    };
    let missing = missing_container();
    let cases: Vec<(&str, pb::RecoverTaskRequest, Code, &str)> = vec![
        (
            "no handle",
            pb::RecoverTaskRequest {
                task_id: ghost.id().to_owned(),
                handle: None,
            },
            Code::InvalidArgument,
            "handle",
        ),
        (
            "a handle without a config",
            ghost.recover_request(pb::TaskHandle {
                config: None,
                ..handle(missing_container_state(&missing))
            }),
            Code::InvalidArgument,
            "config",
        ),
        (
            "an empty driver_state",
            ghost.recover_request(handle(Vec::new())),
            Code::InvalidArgument,
            "driver_state",
        ),
        (
            "binary garbage",
            ghost.recover_request(handle(vec![0xff, 0x00, 0xc3, 0x28, 0x7b])),
            Code::InvalidArgument,
            "driver_state",
        ),
        (
            "another version",
            ghost.recover_request(handle(br#"{"version":99}"#.to_vec())),
            Code::InvalidArgument,
            "version",
        ),
        (
            "missing fields",
            ghost.recover_request(handle(br#"{"version":1}"#.to_vec())),
            Code::InvalidArgument,
            "malformed",
        ),
        (
            "a 3 MiB driver_state",
            ghost.recover_request(handle(vec![b'{'; HUGE])),
            Code::InvalidArgument,
            "driver_state",
        ),
        (
            "a container that does not exist",
            ghost.recover_request(handle(missing_container_state(&missing))),
            Code::NotFound,
            &missing,
        ),
    ];
    for (what, request, code, needle) in cases {
        assert_status(
            &format!("RecoverTask with {what}"),
            driver.clone().recover_task(request).await.map(|_| ()),
            code,
            needle,
        );
        assert_not_found(
            "InspectTask after a failed RecoverTask",
            ghost.id(),
            driver.clone().inspect_task(ghost.inspect_request()).await,
        );
        calls += 2;
    }
    // Commands no process could take never reach the engine (Docker 20.10
    // hangs the container for good on an exec of a 3 MiB command).
    for (what, command, needle) in [
        ("a 3 MiB argument", vec!["a".repeat(HUGE)], "bytes"),
        (
            "a NUL byte",
            vec!["echo".to_owned(), "a\0b".to_owned()],
            "NUL",
        ),
        ("no command", Vec::new(), "command is required"),
    ] {
        assert_status(
            &format!("ExecTask with {what}"),
            driver
                .clone()
                .exec_task(pb::ExecTaskRequest {
                    task_id: bystander.task.id().to_owned(),
                    command: command.clone(),
                    timeout: Some(duration(Duration::from_secs(5))),
                })
                .await
                .map(|_| ()),
            Code::InvalidArgument,
            needle,
        );
        let setup = pb::ExecTaskStreamingRequest {
            setup: Some(Setup {
                task_id: bystander.task.id().to_owned(),
                command,
                tty: false,
            }),
            tty_size: None,
            stdin: None,
        };
        assert_status(
            &format!("ExecTaskStreaming with {what}"),
            driver
                .clone()
                .exec_task_streaming(tokio_stream::iter(vec![setup]))
                .await
                .map(|_| ()),
            Code::InvalidArgument,
            needle,
        );
        calls += 2;
    }
    // DestroyNetwork naming a container that is not the alloc's pause
    // container (here the bystander's) leaves it alone.
    let bystander_container = plugin
        .driver()
        .inspect_task(bystander.task.inspect_request())
        .await
        .expect("InspectTask")
        .into_inner()
        .driver
        .expect("driver attributes")
        .attributes["container_id"]
        .clone();
    for named in [
        bystander_container.clone(),
        bystander_container[..12].to_owned(),
    ] {
        let spec = pb::NetworkIsolationSpec {
            mode: NetworkIsolationMode::Group.into(),
            path: String::new(),
            labels: [("docker_sandbox_container_id".to_owned(), named.clone())].into(),
            hosts_config: None,
        };
        assert_status(
            "DestroyNetwork naming a task's container",
            driver
                .clone()
                .destroy_network(pb::DestroyNetworkRequest {
                    alloc_id: bystander.task.alloc_id().to_owned(),
                    isolation_spec: Some(spec),
                })
                .await
                .map(|_| ()),
            Code::InvalidArgument,
            "not the pause container",
        );
        calls += 1;
    }
    wasmdock_e2e::figure!("unknown ids and garbage handles: {calls} calls, all refused cleanly");
    bystander.check(&plugin, began).await;
}

// ---------------------------------------------------------------------------
// Duplicate starts, and stop and destroy racing

/// A task whose container sleeps (and, as PID 1, ignores SIGTERM).
fn sleeper(name: &str) -> Task {
    TaskBuilder::new(
        name,
        json!({ "image": BUSYBOX_1, "command": "sleep", "args": ["1000"] }),
    )
    .build()
    .unwrap()
}

fn containers_of(task: &Task) -> Vec<String> {
    docker::containers_with_label("com.hashicorp.nomad.alloc_id", task.alloc_id()).unwrap()
}

#[tokio::test]
async fn concurrent_duplicate_starts_start_the_task_once() {
    const STARTS: usize = 10;
    let plugin = plugin(hostile_config()).await;
    let bystander = Bystander::start(&plugin).await;
    let began = Instant::now();
    let task = sleeper("duplicate");
    let mut starts = JoinSet::new();
    for _ in 0..STARTS {
        let mut driver = plugin.driver();
        let request = task.start_request();
        starts.spawn(async move {
            let at = Instant::now();
            let result = tokio::time::timeout(CALL_DEADLINE, driver.start_task(request)).await;
            (result, at.elapsed())
        });
    }
    let mut started = Vec::new();
    let mut refused = BTreeMap::<String, usize>::new();
    let mut slowest_refusal = Duration::ZERO;
    while let Some(joined) = starts.join_next().await {
        let (result, took) = joined.expect("a start task");
        match result.unwrap_or_else(|_| panic!("StartTask gave no answer within {CALL_DEADLINE:?}"))
        {
            Ok(response) => started.push((response.into_inner(), took)),
            Err(status) => {
                assert!(
                    acceptable(status.code(), status.message()),
                    "a duplicate StartTask failed uncleanly: {status:?}"
                );
                *refused
                    .entry(format!("{:?}: {}", status.code(), status.message()))
                    .or_default() += 1;
                slowest_refusal = slowest_refusal.max(took);
            }
        }
    }
    wasmdock_e2e::figure!(
        "{STARTS} concurrent StartTask: {} started (in {:?}), refused (slowest after {slowest_refusal:?}): {refused:?}",
        started.len(),
        started
            .iter()
            .map(|(_, took)| *took)
            .max()
            .unwrap_or_default()
    );
    assert_eq!(
        started.len(),
        1,
        "exactly one StartTask succeeds; refused: {refused:?}"
    );
    let containers = containers_of(&task);
    assert_eq!(containers.len(), 1, "exactly one container: {containers:?}");
    let inspect = plugin
        .driver()
        .inspect_task(task.inspect_request())
        .await
        .expect("InspectTask")
        .into_inner();
    assert_eq!(
        inspect.task.as_ref().expect("a status").state(),
        pb::TaskState::Running
    );
    assert_eq!(
        inspect.driver.expect("driver attributes").attributes["container_id"],
        containers[0],
        "the task runs in the one container"
    );
    assert_eq!(
        docker::container_inspect(&containers[0])
            .unwrap()
            .expect("the container")["State"]["Running"],
        true
    );
    // One more start of the running task is refused too.
    let again = plugin.driver().start_task(task.start_request()).await;
    assert_status(
        "StartTask of a running task",
        again.map(|_| ()),
        Code::AlreadyExists,
        task.id(),
    );
    plugin
        .driver()
        .destroy_task(task.destroy_request(true))
        .await
        .expect("DestroyTask");
    assert!(containers_of(&task).is_empty(), "the container is gone");
    bystander.check(&plugin, began).await;
}

#[tokio::test]
async fn concurrent_stops_and_destroys_of_one_task_end_cleanly() {
    const EACH: usize = 10;
    let plugin = plugin(hostile_config()).await;
    let bystander = Bystander::start(&plugin).await;
    let began = Instant::now();
    let task = sleeper("stop-destroy");
    start(&plugin, &task).await;
    // Waiters from before must all be answered.
    let mut waiters = JoinSet::new();
    for _ in 0..3 {
        let mut driver = plugin.driver();
        let request = task.wait_request();
        waiters.spawn(async move {
            tokio::time::timeout(CALL_DEADLINE, driver.wait_task(request)).await
        });
    }
    let mut calls = JoinSet::new();
    for i in 0..EACH * 2 {
        let mut driver = plugin.driver();
        let (stop, destroy) = (
            task.stop_request(Duration::from_secs(2), ""),
            task.destroy_request(true),
        );
        calls.spawn(async move {
            let at = Instant::now();
            let (verb, result) = if i % 2 == 0 {
                (
                    "StopTask",
                    tokio::time::timeout(CALL_DEADLINE, driver.stop_task(stop))
                        .await
                        .map(|r| r.map(|_| ())),
                )
            } else {
                (
                    "DestroyTask",
                    tokio::time::timeout(CALL_DEADLINE, driver.destroy_task(destroy))
                        .await
                        .map(|r| r.map(|_| ())),
                )
            };
            (verb, result, at.elapsed())
        });
    }
    let mut outcomes = BTreeMap::<String, usize>::new();
    let mut slowest = Duration::ZERO;
    while let Some(joined) = calls.join_next().await {
        let (verb, result, took) = joined.expect("a call task");
        slowest = slowest.max(took);
        let result =
            result.unwrap_or_else(|_| panic!("{verb} gave no answer within {CALL_DEADLINE:?}"));
        let label = match result {
            Ok(()) => format!("{verb} OK"),
            Err(status) => {
                assert!(
                    acceptable(status.code(), status.message()),
                    "{verb} failed uncleanly: {status:?}"
                );
                format!("{verb} {:?}", status.code())
            }
        };
        *outcomes.entry(label).or_default() += 1;
    }
    wasmdock_e2e::figure!(
        "{EACH} StopTask + {EACH} DestroyTask at once: {outcomes:?}, slowest {slowest:?}"
    );
    assert!(
        outcomes.keys().any(|k| k == "DestroyTask OK"),
        "one DestroyTask removes the task: {outcomes:?}"
    );
    while let Some(joined) = waiters.join_next().await {
        let answer = joined
            .expect("a waiter task")
            .unwrap_or_else(|_| panic!("WaitTask gave no answer within {CALL_DEADLINE:?}"));
        match answer {
            Ok(response) => assert!(response.into_inner().result.is_some(), "an exit result"),
            Err(status) => assert!(
                acceptable(status.code(), status.message()),
                "WaitTask: {status:?}"
            ),
        }
    }
    assert!(
        containers_of(&task).is_empty(),
        "the container is gone: {:?}",
        containers_of(&task)
    );
    let driver = plugin.driver();
    assert_not_found(
        "InspectTask",
        task.id(),
        driver.clone().inspect_task(task.inspect_request()).await,
    );
    assert_not_found(
        "WaitTask",
        task.id(),
        driver.clone().wait_task(task.wait_request()).await,
    );
    assert_not_found(
        "StopTask",
        task.id(),
        driver
            .clone()
            .stop_task(task.stop_request(Duration::from_secs(1), ""))
            .await,
    );
    assert_not_found(
        "DestroyTask",
        task.id(),
        driver
            .clone()
            .destroy_task(task.destroy_request(true))
            .await,
    );
    bystander.check(&plugin, began).await;
}
