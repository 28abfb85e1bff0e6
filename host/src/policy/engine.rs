//! The one wasmtime [`Engine`] of the plugin, its epoch ticker and the
//! permits that bound how many evaluations run at once.
//!
//! Deadlines are epoch based: every call arms a deadline on its own fresh
//! store, in ticks of the engine-wide epoch. The ticker is a plain thread
//! that sleeps one tick and then bumps the epoch once, so a stalled ticker
//! skips the ticks it missed instead of bursting them into innocent calls.
//! It parks after a second without evaluations and is woken by the next
//! one, so an idle node pays nothing for it.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::{self, JoinHandle, Thread};
use std::time::Duration;

use wasmtime::{Config, Engine, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig};

use super::{PolicyError, Result};

/// The smallest and largest epoch tick. A call's deadline is cut into about
/// forty ticks, so it overshoots by at most a fortieth and the one tick
/// added for rounding (plus scheduling).
const MIN_TICK: Duration = Duration::from_millis(1);
const MAX_TICK: Duration = Duration::from_millis(10);
const TICKS_PER_DEADLINE: u32 = 40;
/// Ticks without an evaluation after which the ticker parks.
const IDLE_TICKS_BEFORE_PARK: u32 = 100;
/// Per-component pool sizing. Rust guests have one memory and a handful of
/// core instances and tables; these leave room for other toolchains.
const CORE_INSTANCES_PER_COMPONENT: u32 = 16;
const MEMORIES_PER_COMPONENT: u32 = 2;
const TABLES_PER_COMPONENT: u32 = 16;
/// Table elements one instance may have.
pub(crate) const MAX_TABLE_ELEMENTS: usize = 20_000;
/// Bytes of each pooled memory and table reset with `memset` rather than
/// returned to the kernel between instances. A guest's first pages (its
/// stack, data and the start of its heap, with a 64 KiB stack) are touched
/// by every call; resetting them in place saves a page fault per page per
/// call, which measured as the largest part of a call's cost.
const KEEP_RESIDENT: usize = 256 * 1024;
/// The same for tables, which are small in the guests we know.
const TABLE_KEEP_RESIDENT: usize = 16 * 1024;
/// Wasm stack one call may use.
const MAX_WASM_STACK: usize = 512 * 1024;

/// How the engine allocates instances.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Use wasmtime's pooling allocator (pre-reserved slots, copy-on-write
    /// heaps) instead of allocating each instance on demand.
    pub pooling: bool,
    /// How many evaluations may run at once; further callers wait.
    pub max_concurrent: u32,
    /// The largest linear memory any module may be given, in bytes.
    pub max_memory_bytes: u64,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            pooling: true,
            max_concurrent: 64,
            max_memory_bytes: crate::config::policy::MAX_MEMORY_LIMIT_MB << 20,
        }
    }
}

/// The engine, its ticker and the evaluation permits.
#[derive(Debug)]
pub(crate) struct Runtime {
    pub(crate) engine: Engine,
    pub(crate) settings: EngineSettings,
    ticker: Ticker,
    permits: Permits,
}

impl Runtime {
    pub(crate) fn new(settings: EngineSettings) -> Result<Self> {
        let mut config = Config::new();
        config
            .epoch_interruption(true)
            .cranelift_opt_level(OptLevel::Speed)
            .max_wasm_stack(MAX_WASM_STACK)
            .parallel_compilation(true);
        if settings.pooling {
            let slots = settings.max_concurrent.max(1);
            let mut pool = PoolingAllocationConfig::default();
            pool.total_component_instances(slots)
                .total_core_instances(slots * CORE_INSTANCES_PER_COMPONENT)
                .total_memories(slots * MEMORIES_PER_COMPONENT)
                .total_tables(slots * TABLES_PER_COMPONENT)
                .max_memories_per_component(MEMORIES_PER_COMPONENT)
                .max_tables_per_component(TABLES_PER_COMPONENT)
                .table_elements(MAX_TABLE_ELEMENTS)
                .max_memory_size(usize::try_from(settings.max_memory_bytes).unwrap_or(usize::MAX));
            pool.linear_memory_keep_resident(KEEP_RESIDENT)
                .table_keep_resident(TABLE_KEEP_RESIDENT);
            config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        }
        let engine =
            Engine::new(&config).map_err(|error| PolicyError::Engine(format!("{error:#}")))?;
        let ticker = Ticker::start(engine.clone())?;
        Ok(Self {
            engine,
            permits: Permits::new(settings.max_concurrent.max(1) as usize),
            settings,
            ticker,
        })
    }

    /// Makes sure a deadline this short is measured in fine enough ticks.
    pub(crate) fn accommodate(&self, deadline: Duration) {
        let wanted = (deadline / TICKS_PER_DEADLINE).clamp(MIN_TICK, MAX_TICK);
        let nanos = u64::try_from(wanted.as_nanos()).unwrap_or(u64::MAX);
        self.ticker
            .shared
            .tick_nanos
            .fetch_min(nanos, Ordering::Relaxed);
    }

    /// The epoch deadline, in ticks, for a call of `deadline`: at least
    /// `deadline` of wall time, at most one tick more.
    pub(crate) fn deadline_ticks(&self, deadline: Duration) -> u64 {
        let tick = self.ticker.shared.tick_nanos.load(Ordering::Relaxed).max(1);
        let nanos = u64::try_from(deadline.as_nanos()).unwrap_or(u64::MAX);
        nanos.div_ceil(tick).saturating_add(1)
    }

    /// Waits for a free evaluation slot and keeps the ticker running while
    /// the returned permit lives.
    pub(crate) fn enter(&self) -> Permit<'_> {
        self.permits.acquire();
        self.ticker.enter();
        Permit { runtime: self }
    }
}

/// One running evaluation.
#[derive(Debug)]
pub(crate) struct Permit<'a> {
    runtime: &'a Runtime,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.runtime.ticker.leave();
        self.runtime.permits.release();
    }
}

/// A counting semaphore with a lock-free fast path.
#[derive(Debug)]
struct Permits {
    limit: usize,
    used: AtomicUsize,
    waiters: AtomicUsize,
    lock: Mutex<()>,
    freed: Condvar,
}

impl Permits {
    fn new(limit: usize) -> Self {
        Self {
            limit,
            used: AtomicUsize::new(0),
            waiters: AtomicUsize::new(0),
            lock: Mutex::new(()),
            freed: Condvar::new(),
        }
    }

    fn try_take(&self) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used < self.limit).then_some(used + 1)
            })
            .is_ok()
    }

    fn acquire(&self) {
        if self.try_take() {
            return;
        }
        let mut guard = self
            .lock
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        self.waiters.fetch_add(1, Ordering::SeqCst);
        while !self.try_take() {
            guard = self
                .freed
                .wait_timeout(guard, Duration::from_millis(50))
                .unwrap_or_else(|poison| poison.into_inner())
                .0;
        }
        self.waiters.fetch_sub(1, Ordering::SeqCst);
    }

    fn release(&self) {
        self.used.fetch_sub(1, Ordering::AcqRel);
        if self.waiters.load(Ordering::SeqCst) > 0 {
            let _guard = self
                .lock
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            self.freed.notify_one();
        }
    }
}

/// The epoch ticker thread.
#[derive(Debug)]
struct Ticker {
    shared: Arc<TickerShared>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct TickerShared {
    engine: Engine,
    tick_nanos: AtomicU64,
    active: AtomicUsize,
    parked: AtomicBool,
    stop: AtomicBool,
    thread: OnceLock<Thread>,
}

impl Ticker {
    fn start(engine: Engine) -> Result<Self> {
        let shared = Arc::new(TickerShared {
            engine,
            tick_nanos: AtomicU64::new(u64::try_from(MAX_TICK.as_nanos()).unwrap_or(u64::MAX)),
            active: AtomicUsize::new(0),
            parked: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            thread: OnceLock::new(),
        });
        let inner = Arc::clone(&shared);
        let thread = thread::Builder::new()
            .name("policy-epoch".into())
            .spawn(move || inner.run())
            .map_err(|error| {
                PolicyError::Engine(format!("cannot start the epoch ticker: {error}"))
            })?;
        let _ = shared.thread.set(thread.thread().clone());
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    fn enter(&self) {
        self.shared.active.fetch_add(1, Ordering::SeqCst);
        if self.shared.parked.load(Ordering::SeqCst)
            && let Some(thread) = self.shared.thread.get()
        {
            thread.unpark();
        }
    }

    fn leave(&self) {
        self.shared.active.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

impl TickerShared {
    fn run(&self) {
        let mut idle = 0u32;
        // Ticks are due on a fixed schedule, so the sleeps' own lateness
        // does not add up over a deadline's twenty ticks.
        let mut next = std::time::Instant::now();
        while !self.stop.load(Ordering::SeqCst) {
            if self.active.load(Ordering::SeqCst) == 0 {
                idle += 1;
                if idle > IDLE_TICKS_BEFORE_PARK {
                    self.parked.store(true, Ordering::SeqCst);
                    // Re-check after announcing the park: an evaluation that
                    // started in between either is seen here or sees `parked`
                    // and unparks us (park's token keeps that wake-up).
                    if self.active.load(Ordering::SeqCst) == 0 && !self.stop.load(Ordering::SeqCst)
                    {
                        thread::park();
                    }
                    self.parked.store(false, Ordering::SeqCst);
                    idle = 0;
                    next = std::time::Instant::now();
                    continue;
                }
            } else {
                idle = 0;
            }
            let tick = Duration::from_nanos(self.tick_nanos.load(Ordering::Relaxed));
            next += tick;
            let now = std::time::Instant::now();
            if next + tick < now {
                // More than a tick behind (the thread was descheduled):
                // missed ticks are skipped, never bumped in a burst that
                // would cut a call short.
                next = now;
            }
            #[expect(
                clippy::disallowed_methods,
                reason = "the ticker is a plain thread, not an async task"
            )]
            thread::sleep(next.saturating_duration_since(now));
            // One bump per wake-up, however late.
            self.engine.increment_epoch();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_round_up_and_add_one_tick() {
        let runtime = Runtime::new(EngineSettings {
            pooling: false,
            ..EngineSettings::default()
        })
        .unwrap();
        runtime.accommodate(Duration::from_millis(100));
        // 100 ms / 40 = 2.5 ms ticks: 40 ticks plus one.
        assert_eq!(runtime.deadline_ticks(Duration::from_millis(100)), 41);
        assert_eq!(runtime.deadline_ticks(Duration::from_millis(101)), 42);
        // A shorter deadline only ever makes ticks finer.
        runtime.accommodate(Duration::from_millis(10));
        runtime.accommodate(Duration::from_secs(10));
        assert_eq!(runtime.deadline_ticks(Duration::from_millis(10)), 11);
    }

    #[test]
    fn permits_bound_concurrency_and_wake_waiters() {
        let permits = Arc::new(Permits::new(2));
        permits.acquire();
        permits.acquire();
        assert!(!permits.try_take());
        let waiter = {
            let permits = Arc::clone(&permits);
            thread::spawn(move || {
                permits.acquire();
                permits.release();
            })
        };
        #[expect(clippy::disallowed_methods, reason = "a plain test thread")]
        thread::sleep(Duration::from_millis(20));
        permits.release();
        waiter.join().unwrap();
        permits.release();
        assert_eq!(permits.used.load(Ordering::SeqCst), 0);
    }
}
