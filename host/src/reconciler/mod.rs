//! The dangling-container reconciler: finds running containers a Nomad
//! docker driver started that no task tracks (the engine started them but
//! the API call failed, say) and removes them.
//!
//! It starts once, from the first Fingerprint (SetConfig also runs on the
//! agent's throwaway validation launches, which must not start background
//! work), makes its first pass after `max(period, creation_grace)` and then
//! one every `period`, only while the driver is healthy, and stops with the
//! plugin. A pass makes one list call, inspects only the containers whose
//! decision needs their environment, and bounds every call by
//! `max(30 s, period)`. The decision itself is [`plan::plan`], a pure
//! function.

pub mod plan;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;

use crate::config::plugin::DanglingConfig;
use crate::driver::Driver;
use plan::Matcher;

/// Environment variable that shortens the period and grace for tests
/// (`period=1s,creation_grace=2s`); plugin config cannot go below Nomad's
/// one-minute grace.
pub const TEST_TIMING_ENV: &str = "WASMDOCK_TEST_DANGLING_TIMING";

/// Shortest time any engine call of a pass may take.
const MIN_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// What one pass needs from the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Whether passes run.
    pub enabled: bool,
    /// Time between passes.
    pub period: Duration,
    /// Containers younger than this are left alone.
    pub grace: Duration,
    /// Only log what would be removed.
    pub dry_run: bool,
}

impl Settings {
    /// From the plugin config, with the test override applied.
    pub fn from_config(config: &DanglingConfig) -> Self {
        let mut settings = Self {
            enabled: config.enabled,
            period: config.period.get(),
            grace: config.creation_grace.get(),
            dry_run: config.dry_run,
        };
        if let Ok(spec) = std::env::var(TEST_TIMING_ENV) {
            for part in spec.split(',') {
                let (key, value) = part.split_once('=').unwrap_or((part, ""));
                let Ok(value) = humantime::parse_duration(value.trim()) else {
                    continue;
                };
                match key.trim() {
                    "period" => settings.period = value,
                    "creation_grace" => settings.grace = value,
                    _ => {}
                }
            }
        }
        settings
    }
}

/// Container ids the driver tracks: task containers and pause containers.
fn tracked(driver: &Driver) -> HashSet<String> {
    let mut ids: HashSet<String> = driver
        .tasks
        .all()
        .iter()
        .map(|h| h.container_id.clone())
        .collect();
    ids.extend(driver.pauses.ids());
    ids
}

fn settings_now(driver: &Driver) -> Option<Settings> {
    driver
        .configured()
        .map(|c| Settings::from_config(&c.plugin.gc.dangling_containers))
}

/// Runs passes until `stop` fires.
pub async fn run(driver: Arc<Driver>, stop: CancellationToken) {
    let Some(first) = settings_now(&driver) else {
        return;
    };
    tracing::debug!(period = ?first.period, creation_grace = ?first.grace, enabled = first.enabled, "dangling-container reconciler started");
    let mut delay = first.period.max(first.grace);
    let mut last_ok = true;
    loop {
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stop.cancelled() => return,
        }
        let Some(settings) = settings_now(&driver) else {
            continue;
        };
        delay = settings.period;
        if !settings.enabled || !driver.fingerprint.healthy() {
            continue;
        }
        let outcome = tokio::select! {
            outcome = pass(&driver, &settings, driver.policy_matcher()) => outcome,
            () = stop.cancelled() => return,
        };
        match (flip(&mut last_ok, outcome.is_ok()), outcome) {
            (true, Ok(())) => tracing::info!("dangling-container reconciliation works again"),
            (true, Err(err)) => {
                tracing::warn!(error = %err, "dangling-container reconciliation failed");
            }
            (false, _) => {}
        }
    }
}

/// Records a pass's outcome; true when it differs from the previous one
/// (so a failure is logged once per streak, not on every pass).
fn flip(last_ok: &mut bool, ok: bool) -> bool {
    let flipped = *last_ok != ok;
    *last_ok = ok;
    flipped
}

/// One pass: list, decide, remove (or, dry run, only log). With a
/// `matcher` (a policy), every untracked candidate past the grace period
/// except pause containers is inspected for its environment, and the
/// decision runs on a blocking thread (guest code).
pub async fn pass(
    driver: &Driver,
    settings: &Settings,
    matcher: Option<Arc<dyn Matcher>>,
) -> Result<(), String> {
    let docker = driver.docker().await.map_err(|e| e.to_string())?;
    let timeout = settings.period.max(MIN_CALL_TIMEOUT);
    let mut listed = docker
        .list_running(timeout)
        .await
        .map_err(|e| format!("listing containers: {e}"))?;
    let tracked = tracked(driver);
    let now = i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs(),
    )
    .unwrap_or(i64::MAX);
    let cutoff = now.saturating_sub(i64::try_from(settings.grace.as_secs()).unwrap_or(i64::MAX));
    let policy = matcher.is_some();
    for candidate in listed.iter_mut().filter(|c| {
        !tracked.contains(&c.id)
            && c.created <= cutoff
            && (plan::needs_env(c) || (policy && !plan::is_pause(c)))
    }) {
        match docker.container_env(&candidate.id, timeout).await {
            Ok(env) => candidate.env = Some(env),
            Err(err) => {
                tracing::debug!(container_id = %candidate.id, error = %err, "cannot inspect a possible dangling container; leaving it");
            }
        }
    }
    let grace = settings.grace;
    let removals = match matcher {
        None => plan::plan(&tracked, &listed, now, grace, &[]),
        Some(matcher) => tokio::task::spawn_blocking(move || {
            plan::plan(&tracked, &listed, now, grace, &[matcher.as_ref()])
        })
        .await
        .map_err(|e| format!("deciding with the reconciler-match policy: {e}"))?,
    };
    for removal in removals {
        if settings.dry_run {
            tracing::info!(container_id = %removal.id, name = %removal.name, age_secs = removal.age_secs, rule = %removal.rule, "dangling container found (dry run: not removed)");
            continue;
        }
        match docker.remove_container_within(&removal.id, timeout).await {
            Ok(()) => {
                tracing::info!(container_id = %removal.id, name = %removal.name, age_secs = removal.age_secs, rule = %removal.rule, "removed dangling container");
            }
            Err(err) => {
                tracing::warn!(container_id = %removal.id, name = %removal.name, error = %err, "cannot remove dangling container");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::duration::GoDuration;

    #[test]
    fn failures_are_reported_when_the_state_flips() {
        let mut last_ok = true;
        let reported: Vec<bool> = [true, false, false, false, true, true, false]
            .into_iter()
            .map(|ok| flip(&mut last_ok, ok))
            .collect();
        assert_eq!(reported, [false, true, false, false, true, false, true]);
    }

    #[test]
    fn settings_follow_the_config() {
        let config = DanglingConfig {
            enabled: true,
            period: GoDuration::from_secs(300),
            creation_grace: GoDuration::from_secs(600),
            dry_run: true,
        };
        let settings = Settings::from_config(&config);
        if std::env::var_os(TEST_TIMING_ENV).is_none() {
            assert_eq!(settings.period, Duration::from_secs(300));
            assert_eq!(settings.grace, Duration::from_secs(600));
        }
        assert!(settings.enabled && settings.dry_run);
    }
}
