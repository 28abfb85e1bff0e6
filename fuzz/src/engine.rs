//! The fuzzing loop: start from the committed corpus, mutate or generate an
//! input, run the target under `catch_unwind`, a clock and the counting
//! allocator, and keep the input when its outcome class is new.
//!
//! Findings are panics (crashes), broken properties, inputs that take
//! longer than [`Settings::hang_after`] (hangs) and inputs that make the
//! target hold more than [`Settings::alloc_limit`] bytes at once. Each is
//! written to `target/fuzz-crashes/<target>/` and printed in hex with the
//! seed and iteration that produced it. An input that never returns is
//! caught by a watchdog thread, which prints and saves it, then aborts.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use crate::alloc;
use crate::mutate;
use crate::rng::Rng;
use crate::targets::Target;

/// Largest corpus kept in memory; past it, new finds replace old ones.
const MAX_CORPUS: usize = 8192;

/// How a run is set up.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Wall-clock budget of the run.
    pub duration: Duration,
    /// Stop after this many executions, if set (for exact reproduction).
    pub max_execs: Option<u64>,
    /// The PRNG seed.
    pub seed: u64,
    /// Longest input produced.
    pub max_len: usize,
    /// An input slower than this is a hang.
    pub hang_after: Duration,
    /// An input still running after this much time stops the process.
    pub abort_after: Duration,
    /// Most bytes an input may make the target hold at once.
    pub alloc_limit: usize,
    /// Where findings are written (a directory per target is made in it).
    pub crash_dir: PathBuf,
    /// Where the committed seed corpus is (a directory per target).
    pub corpus_dir: PathBuf,
}

impl Settings {
    /// Defaults for a run of `duration` with `seed`.
    pub fn new(duration: Duration, seed: u64) -> Self {
        Self {
            duration,
            max_execs: None,
            seed,
            max_len: 128 * 1024,
            hang_after: Duration::from_secs(1),
            abort_after: Duration::from_secs(30),
            alloc_limit: 64 << 20,
            crash_dir: target_dir().join("fuzz-crashes"),
            corpus_dir: corpus_dir(),
        }
    }
}

/// The committed corpus: `fuzz/corpus`.
pub fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus")
}

/// Cargo's target directory (`CARGO_TARGET_DIR`, else the workspace's).
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
    }
}

/// A seed from the clock, for runs that were not given one.
pub fn clock_seed() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Rng::new(now.as_nanos() as u64 ^ u64::from(std::process::id())).next_u64()
}

/// What kind of finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// The target panicked.
    Crash,
    /// A property of the target's result does not hold.
    Property,
    /// The input took longer than the hang threshold.
    Hang,
    /// The input made the target hold more memory than allowed.
    Alloc,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Crash => "crash",
            Self::Property => "property",
            Self::Hang => "hang",
            Self::Alloc => "alloc",
        }
    }
}

/// One distinct problem found.
#[derive(Debug, Clone)]
pub struct Finding {
    /// Its kind.
    pub kind: Kind,
    /// The panic message, the broken property, or the time or size.
    pub message: String,
    /// The (first) input that showed it.
    pub input: Vec<u8>,
    /// The execution that ran it, counted from 1.
    pub iteration: u64,
    /// How many inputs showed it.
    pub hits: u64,
    /// Where the input was written.
    pub saved: Option<PathBuf>,
}

/// The figures of a run.
#[derive(Debug, Clone)]
pub struct Report {
    /// The target.
    pub target: &'static str,
    /// The seed, to reproduce the run.
    pub seed: u64,
    /// Executions.
    pub execs: u64,
    /// Wall-clock time of the run.
    pub elapsed: Duration,
    /// Distinct outcome classes seen.
    pub outcomes: usize,
    /// Inputs in the corpus at the end (seeds included).
    pub corpus: usize,
    /// Committed seeds it started from.
    pub seeds: usize,
    /// The slowest execution.
    pub slowest: Duration,
    /// The input of the slowest execution.
    pub slowest_input: Vec<u8>,
    /// The most memory one execution held.
    pub peak_alloc: usize,
    /// The input of that execution.
    pub heaviest_input: Vec<u8>,
    /// Distinct findings.
    pub findings: Vec<Finding>,
}

impl Report {
    /// Executions per second.
    pub fn execs_per_sec(&self) -> f64 {
        self.execs as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Findings of one kind.
    pub fn count(&self, kind: Kind) -> usize {
        self.findings.iter().filter(|f| f.kind == kind).count()
    }

    /// One line of figures.
    pub fn summary(&self) -> String {
        format!(
            "{}: {} execs in {:.1} s ({:.0}/s), {} outcomes, corpus {} (from {} seeds), slowest {:.1} ms, peak alloc {:.1} MiB, crashes {}, properties {}, hangs {}, allocs {}, seed {:#x}",
            self.target,
            self.execs,
            self.elapsed.as_secs_f64(),
            self.execs_per_sec(),
            self.outcomes,
            self.corpus,
            self.seeds,
            self.slowest.as_secs_f64() * 1e3,
            self.peak_alloc as f64 / f64::from(1 << 20),
            self.count(Kind::Crash),
            self.count(Kind::Property),
            self.count(Kind::Hang),
            self.count(Kind::Alloc),
            self.seed,
        )
    }

    /// Every finding with how to reproduce it.
    pub fn details(&self) -> String {
        let mut out = String::new();
        for finding in &self.findings {
            let _ = writeln!(
                out,
                "{} {} (seen {} times; first at iteration {} of seed {:#x}): {}",
                self.target,
                finding.kind.as_str(),
                finding.hits,
                finding.iteration,
                self.seed,
                finding.message
            );
            if let Some(path) = &finding.saved {
                let _ = writeln!(out, "  saved to {}", path.display());
                let _ = writeln!(
                    out,
                    "  reproduce: cargo run -p wasmdock-fuzz -- replay {} {}",
                    self.target,
                    path.display()
                );
            }
            let _ = writeln!(
                out,
                "  input ({} bytes): {}",
                finding.input.len(),
                hex(&finding.input, 2048)
            );
        }
        out
    }
}

/// `bytes` in hex, cut after `max` bytes.
pub fn hex(bytes: &[u8], max: usize) -> String {
    let mut out = String::with_capacity(2 * bytes.len().min(max) + 16);
    for b in bytes.iter().take(max) {
        let _ = write!(out, "{b:02x}");
    }
    if bytes.len() > max {
        let _ = write!(out, "… ({} more bytes)", bytes.len() - max);
    }
    out
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

// ---------------------------------------------------------------------------
// Running one input

thread_local! {
    static CAPTURING: Cell<bool> = const { Cell::new(false) };
    static PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Panics of the fuzzed code are recorded instead of printed; panics
/// anywhere else still reach the previous hook.
fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if CAPTURING.with(Cell::get) {
                let message = info.to_string();
                PANIC.with(|p| *p.borrow_mut() = Some(message));
            } else {
                previous(info);
            }
        }));
    });
}

/// What one execution did.
#[derive(Debug, Clone, PartialEq)]
pub struct Execution {
    /// The outcome class, or the finding's kind and message.
    pub verdict: Result<String, (Kind, String)>,
    /// How long it took.
    pub time: Duration,
    /// The most memory it held at once.
    pub peak_alloc: usize,
}

/// Runs `target` on `input` once, catching panics.
pub fn execute(target: &Target, input: &[u8]) -> Execution {
    install_panic_hook();
    CAPTURING.with(|c| c.set(true));
    let started = Instant::now();
    let (result, peak_alloc) =
        alloc::peak_of(|| panic::catch_unwind(AssertUnwindSafe(|| (target.run)(input))));
    let time = started.elapsed();
    CAPTURING.with(|c| c.set(false));
    let verdict = match result {
        Ok(Ok(class)) => Ok(class),
        Ok(Err(property)) => Err((Kind::Property, property)),
        Err(_) => {
            let message = PANIC
                .with(|p| p.borrow_mut().take())
                .unwrap_or_else(|| "panicked".to_owned());
            Err((Kind::Crash, message))
        }
    };
    Execution {
        verdict,
        time,
        peak_alloc,
    }
}

/// The finding `execution` amounts to under `settings`, if any.
pub fn judge(execution: &Execution, settings: &Settings) -> Option<(Kind, String)> {
    if let Err(finding) = &execution.verdict {
        return Some(finding.clone());
    }
    if execution.time > settings.hang_after {
        return Some((
            Kind::Hang,
            format!(
                "took {:.2} s (limit {:.2} s)",
                execution.time.as_secs_f64(),
                settings.hang_after.as_secs_f64()
            ),
        ));
    }
    if execution.peak_alloc > settings.alloc_limit {
        return Some((
            Kind::Alloc,
            format!(
                "held {} bytes at once (limit {})",
                execution.peak_alloc, settings.alloc_limit
            ),
        ));
    }
    None
}

// ---------------------------------------------------------------------------
// The watchdog

#[derive(Debug)]
struct InFlight {
    iteration: u64,
    since: Instant,
    running: bool,
    input: Vec<u8>,
}

/// Stops the process, naming the input, when one execution never returns.
struct Watchdog {
    shared: Arc<Mutex<InFlight>>,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    fn start(target: &'static str, seed: u64, settings: &Settings) -> Self {
        let shared = Arc::new(Mutex::new(InFlight {
            iteration: 0,
            since: Instant::now(),
            running: false,
            input: Vec::new(),
        }));
        let (stop, stopped) = mpsc::channel::<()>();
        let watched = Arc::clone(&shared);
        let limit = settings.abort_after;
        let dir = settings.crash_dir.join(target);
        let thread = std::thread::spawn(move || {
            loop {
                match stopped.recv_timeout(Duration::from_millis(500)) {
                    Err(RecvTimeoutError::Timeout) => {}
                    _ => return,
                }
                let flight = watched.lock().unwrap_or_else(|p| p.into_inner());
                if flight.running && flight.since.elapsed() > limit {
                    let saved = save(&dir, "hang", &flight.input);
                    eprintln!(
                        "{target} hang: iteration {} of seed {seed:#x} has run for {:.0} s; saved to {}\n  input ({} bytes): {}",
                        flight.iteration,
                        flight.since.elapsed().as_secs_f64(),
                        saved.map_or_else(|| "nowhere".to_owned(), |p| p.display().to_string()),
                        flight.input.len(),
                        hex(&flight.input, 2048),
                    );
                    std::process::abort();
                }
            }
        });
        Self {
            shared,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn begin(&self, iteration: u64, input: &[u8]) {
        let mut flight = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        flight.iteration = iteration;
        flight.since = Instant::now();
        flight.running = true;
        flight.input.clear();
        flight.input.extend_from_slice(input);
    }

    fn end(&self) {
        self.shared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .running = false;
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn save(dir: &Path, kind: &str, input: &[u8]) -> Option<PathBuf> {
    std::fs::create_dir_all(dir).ok()?;
    let path = dir.join(format!("{kind}-{:016x}.bin", fnv(input)));
    std::fs::write(&path, input).ok()?;
    Some(path)
}

// ---------------------------------------------------------------------------
// The loop

/// The committed corpus files of `target`, sorted by name.
pub fn corpus_files(dir: &Path, target: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir.join(target)) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// The power-of-two bucket of an allocation peak, part of the feedback:
/// an input that holds much more memory than any before is worth keeping.
fn alloc_bucket(bytes: usize) -> u32 {
    (bytes >> 16).checked_ilog2().map_or(0, |b| b + 1)
}

/// Fuzzes `target` under `settings`.
pub fn run(target: &Target, settings: &Settings) -> Report {
    let mut rng = Rng::new(settings.seed);
    let watchdog = Watchdog::start(target.name, settings.seed, settings);
    let started = Instant::now();
    let mut corpus: Vec<Vec<u8>> = corpus_files(&settings.corpus_dir, target.name)
        .iter()
        .filter_map(|path| std::fs::read(path).ok())
        .collect();
    let seeds = corpus.len();
    if corpus.is_empty() {
        corpus.push(Vec::new());
    }
    let mut outcomes: HashSet<String> = HashSet::new();
    let mut findings: Vec<Finding> = Vec::new();
    let mut by_message: HashMap<(Kind, String), usize> = HashMap::new();
    let mut execs = 0u64;
    let mut slowest = Duration::ZERO;
    let mut slowest_input = Vec::new();
    let mut peak_alloc = 0usize;
    let mut heaviest_input = Vec::new();
    let mut queue: Vec<Vec<u8>> = corpus.clone();
    queue.reverse();

    loop {
        if settings.max_execs.is_some_and(|max| execs >= max)
            || (queue.is_empty() && started.elapsed() >= settings.duration)
        {
            break;
        }
        // Seeds first, then mutants, splices and fresh inputs.
        let queued = !queue.is_empty();
        let input = match queue.pop() {
            Some(input) => input,
            None => match rng.below(16) {
                0 | 1 => (target.generate)(&mut rng),
                _ => {
                    let base = &corpus[rng.below(corpus.len())];
                    let other = &corpus[rng.below(corpus.len())];
                    mutate::mutate(
                        base,
                        other,
                        target.format,
                        target.dict,
                        settings.max_len,
                        &mut rng,
                    )
                }
            },
        };
        execs += 1;
        watchdog.begin(execs, &input);
        let execution = execute(target, &input);
        watchdog.end();
        if execution.time > slowest {
            slowest = execution.time;
            slowest_input.clone_from(&input);
        }
        if execution.peak_alloc > peak_alloc {
            peak_alloc = execution.peak_alloc;
            heaviest_input.clone_from(&input);
        }

        let mut finding = judge(&execution, settings);
        if matches!(finding, Some((Kind::Hang, _))) {
            // A slow input is a hang only when it is slow twice: a loaded
            // machine can stall any one execution.
            let again = execute(target, &input);
            if again.time <= settings.hang_after {
                finding = None;
            }
        }
        if let Some((kind, message)) = finding {
            let key = (kind, crate::targets::class(&message));
            match by_message.get(&key) {
                Some(&at) => findings[at].hits += 1,
                None => {
                    let saved = save(&settings.crash_dir.join(target.name), kind.as_str(), &input);
                    by_message.insert(key, findings.len());
                    findings.push(Finding {
                        kind,
                        message,
                        input: input.clone(),
                        iteration: execs,
                        hits: 1,
                        saved,
                    });
                }
            }
        }
        let class = match &execution.verdict {
            Ok(class) => format!("{class} @{}", alloc_bucket(execution.peak_alloc)),
            Err((kind, message)) => format!("{} {}", kind.as_str(), crate::targets::class(message)),
        };
        // Seeds are in the corpus already; anything else with a new
        // outcome joins it.
        if outcomes.insert(class) && !queued {
            if corpus.len() < MAX_CORPUS {
                corpus.push(input);
            } else {
                // Seeds stay; a random later find makes room.
                let keep = seeds.min(MAX_CORPUS - 1);
                let at = keep + rng.below(corpus.len() - keep);
                corpus[at] = input;
            }
        }
    }
    drop(watchdog);
    Report {
        target: target.name,
        seed: settings.seed,
        execs,
        elapsed: started.elapsed(),
        outcomes: outcomes.len(),
        corpus: corpus.len(),
        seeds,
        slowest,
        slowest_input,
        peak_alloc,
        heaviest_input,
        findings,
    }
}
