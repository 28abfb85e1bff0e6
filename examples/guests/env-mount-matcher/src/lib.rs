//! Dangling-container matching by environment and mounts.
//!
//! Containers Nomad started before it labelled them (and containers whose
//! labels were stripped) still carry Nomad's fingerprints: the task
//! environment (`NOMAD_ALLOC_ID`, `NOMAD_GROUP_NAME`, …) and the task
//! directories bound at `/alloc`, `/local` and `/secrets`. This policy
//! claims a container only when every required marker is present, says
//! "not ours" when only some are, and abstains otherwise.
//!
//! The decision logic is [`decide`], a plain function of the configuration
//! and the container; the hook only reads the config and logs the outcome.
//! See README.md for the config keys.

use wasmdock_guest_sdk::limits::{MAX_REASON, clip};
use wasmdock_guest_sdk::reconciler_match::{Container, Decision};
use wasmdock_guest_sdk::{ReconcilerMatch, host};

/// The label every container Nomad's Docker driver creates carries. The
/// driver's native rule handles those.
const ALLOC_LABEL: &str = "com.hashicorp.nomad.alloc_id";
/// The variables Nomad's reconciler checks (`reconcile_dangling.go`).
const DEFAULT_REQUIRED_ENV: &str = "NOMAD_ALLOC_ID,NOMAD_GROUP_NAME";
/// Nomad's task directories inside every task container.
const DEFAULT_REQUIRED_MOUNTS: &str = "/alloc,/local,/secrets";
/// More markers than this is a configuration mistake.
const MAX_MARKERS: usize = 32;

/// This module's `config { }` block, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Config {
    /// `required_env`: variables that must be set (non-empty).
    required_env: Vec<String>,
    /// `required_mounts`: mount targets that must exist.
    required_mounts: Vec<String>,
    /// `require_name_suffix`: the name must also end in `-<NOMAD_ALLOC_ID>`,
    /// as Nomad names task containers `<task>-<alloc id>`.
    require_name_suffix: bool,
    /// Problems found while reading the config (logged as warnings).
    warnings: Vec<String>,
}

impl Config {
    fn load(get: impl Fn(&str) -> Option<String>) -> Self {
        let mut warnings = Vec::new();
        let mut list = |key: &str, default: &str| {
            let raw = get(key).unwrap_or_else(|| default.to_owned());
            let mut items: Vec<String> = split_list(&raw).map(str::to_owned).collect();
            if items.len() > MAX_MARKERS {
                warnings.push(format!(
                    "config {key} lists {} entries; only the first {MAX_MARKERS} are used",
                    items.len()
                ));
                items.truncate(MAX_MARKERS);
            }
            items
        };
        let required_env = list("required_env", DEFAULT_REQUIRED_ENV);
        let required_mounts = list("required_mounts", DEFAULT_REQUIRED_MOUNTS)
            .iter()
            .map(|target| normalise_target(target).to_owned())
            .collect();
        let require_name_suffix = match get("require_name_suffix").as_deref().map(str::trim) {
            None | Some("" | "false" | "no" | "0") => false,
            Some("true" | "yes" | "1") => true,
            Some(other) => {
                warnings.push(format!(
                    "config require_name_suffix = {other:?} is not a boolean; using false"
                ));
                false
            }
        };
        Self {
            required_env,
            required_mounts,
            require_name_suffix,
            warnings,
        }
    }
}

/// The non-empty, trimmed entries of a comma-separated list.
fn split_list(raw: &str) -> impl Iterator<Item = &str> {
    raw.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
}

/// `/alloc/` and `/alloc` are the same target.
fn normalise_target(target: &str) -> &str {
    let trimmed = target.trim_end_matches('/');
    if trimmed.is_empty() { "/" } else { trimmed }
}

fn env_value<'c>(container: &'c Container, key: &str) -> Option<&'c str> {
    container
        .env
        .iter()
        .rev()
        .find(|kv| kv.key == key)
        .map(|kv| kv.value.as_str())
}

fn has_mount(container: &Container, target: &str) -> bool {
    container
        .mounts
        .iter()
        .any(|mount| normalise_target(&mount.target) == target)
}

/// Decides for one container.
fn decide(config: &Config, container: &Container) -> Decision {
    match decide_unclipped(config, container) {
        Decision::Ours(reason) => Decision::Ours(clip(reason, MAX_REASON)),
        Decision::NotOurs(reason) => Decision::NotOurs(clip(reason, MAX_REASON)),
        Decision::Abstain => Decision::Abstain,
    }
}

fn decide_unclipped(config: &Config, container: &Container) -> Decision {
    if container.labels.iter().any(|kv| kv.key == ALLOC_LABEL) {
        return Decision::Abstain;
    }
    if config.required_env.is_empty() && config.required_mounts.is_empty() {
        // Nothing to look for: never claim every container.
        return Decision::Abstain;
    }
    let (env_found, env_missing): (Vec<&str>, Vec<&str>) = config
        .required_env
        .iter()
        .map(String::as_str)
        .partition(|key| env_value(container, key).is_some_and(|value| !value.is_empty()));
    let (mounts_found, mounts_missing): (Vec<&str>, Vec<&str>) = config
        .required_mounts
        .iter()
        .map(String::as_str)
        .partition(|target| has_mount(container, target));

    if env_found.is_empty() && mounts_found.is_empty() {
        return Decision::Abstain;
    }
    let found = describe(&env_found, &mounts_found);
    if !env_missing.is_empty() || !mounts_missing.is_empty() {
        return Decision::NotOurs(format!(
            "has some Nomad markers ({found}) but lacks {}",
            describe(&env_missing, &mounts_missing)
        ));
    }
    if config.require_name_suffix {
        let alloc_id = env_value(container, "NOMAD_ALLOC_ID").unwrap_or_default();
        let suffix_ok = !alloc_id.is_empty()
            && container
                .name
                .strip_suffix(alloc_id)
                .is_some_and(|rest| rest.ends_with('-'));
        if !suffix_ok {
            return Decision::NotOurs(format!(
                "has every Nomad marker ({found}) but its name does not end in -<NOMAD_ALLOC_ID>"
            ));
        }
    }
    Decision::Ours(format!("has every Nomad marker: {found}"))
}

/// "env A, B and mounts /x, /y", leaving out an empty half.
fn describe(env: &[&str], mounts: &[&str]) -> String {
    let env = (!env.is_empty()).then(|| format!("env {}", env.join(", ")));
    let mounts = (!mounts.is_empty()).then(|| format!("mounts {}", mounts.join(", ")));
    match (env, mounts) {
        (Some(env), Some(mounts)) => format!("{env} and {mounts}"),
        (Some(one), None) | (None, Some(one)) => one,
        (None, None) => "nothing".to_owned(),
    }
}

struct Policy;

impl ReconcilerMatch for Policy {
    fn decide(container: Container) -> Decision {
        let config = Config::load(host::config);
        for warning in &config.warnings {
            host::warn(warning, &[]);
        }
        if config.required_env.is_empty() && config.required_mounts.is_empty() {
            host::warn(
                "required_env and required_mounts are both empty; abstaining on every container",
                &[],
            );
        }
        let decision = decide(&config, &container);
        let id = container.id.get(..12).unwrap_or(&container.id);
        match &decision {
            Decision::Ours(reason) => host::info(
                "container is Nomad's",
                &[
                    ("container", id),
                    ("name", &container.name),
                    ("reason", reason),
                ],
            ),
            Decision::NotOurs(reason) => host::info(
                "container is not Nomad's",
                &[
                    ("container", id),
                    ("name", &container.name),
                    ("reason", reason),
                ],
            ),
            Decision::Abstain => host::debug(
                "no opinion on container",
                &[("container", id), ("name", &container.name)],
            ),
        }
        decision
    }
}

wasmdock_guest_sdk::export!(Policy => [reconciler_match]);

#[cfg(test)]
mod tests {
    use super::*;
    use wasmdock_guest_sdk::{KeyValue, Mount};

    const ALLOC: &str = "5b1e0f8e-3c1a-4f62-9d0e-2a7d1c9b8e41";

    fn config(pairs: &[(&str, &str)]) -> Config {
        Config::load(|key| {
            pairs
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    fn kv(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: value.into(),
        }
    }

    fn mount(target: &str) -> Mount {
        Mount {
            source: format!("/var/nomad/alloc/{ALLOC}{target}"),
            target: target.into(),
            read_only: false,
        }
    }

    fn nomad_container() -> Container {
        Container {
            id: "c0ffee".repeat(10),
            name: format!("web-{ALLOC}"),
            image: "busybox:1".into(),
            labels: Vec::new(),
            env: vec![
                kv("NOMAD_ALLOC_ID", ALLOC),
                kv("NOMAD_GROUP_NAME", "web"),
                kv("NOMAD_TASK_NAME", "web"),
                kv("PATH", "/bin"),
            ],
            mounts: vec![mount("/alloc"), mount("/local/"), mount("/secrets")],
            created: 1_700_000_000,
            state: "running".into(),
        }
    }

    fn plain_container() -> Container {
        Container {
            name: "postgres".into(),
            env: vec![kv("PATH", "/bin")],
            mounts: vec![mount("/var/lib/postgresql/data")],
            ..nomad_container()
        }
    }

    #[test]
    fn claims_a_container_with_every_marker() {
        let Decision::Ours(reason) = decide(&config(&[]), &nomad_container()) else {
            panic!("expected ours");
        };
        assert_eq!(
            reason,
            "has every Nomad marker: env NOMAD_ALLOC_ID, NOMAD_GROUP_NAME and mounts /alloc, /local, /secrets"
        );
    }

    #[test]
    fn abstains_on_labelled_containers() {
        let mut container = plain_container();
        container.labels.push(kv(ALLOC_LABEL, ALLOC));
        assert!(matches!(
            decide(&config(&[]), &container),
            Decision::Abstain
        ));
        let mut container = nomad_container();
        container.labels.push(kv(ALLOC_LABEL, ALLOC));
        assert!(matches!(
            decide(&config(&[]), &container),
            Decision::Abstain
        ));
    }

    #[test]
    fn abstains_without_any_marker() {
        assert!(matches!(
            decide(&config(&[]), &plain_container()),
            Decision::Abstain
        ));
    }

    #[test]
    fn partial_markers_are_not_ours() {
        let mut container = nomad_container();
        container.mounts.retain(|m| m.target != "/secrets");
        container.env.retain(|kv| kv.key != "NOMAD_GROUP_NAME");
        let Decision::NotOurs(reason) = decide(&config(&[]), &container) else {
            panic!("expected not-ours");
        };
        assert_eq!(
            reason,
            "has some Nomad markers (env NOMAD_ALLOC_ID and mounts /alloc, /local) but lacks env NOMAD_GROUP_NAME and mounts /secrets"
        );
    }

    #[test]
    fn empty_env_values_do_not_count() {
        let mut container = nomad_container();
        container.env.push(kv("NOMAD_GROUP_NAME", ""));
        assert!(matches!(
            decide(&config(&[]), &container),
            Decision::NotOurs(_)
        ));
    }

    #[test]
    fn custom_markers() {
        let cfg = config(&[
            ("required_env", " NOMAD_TASK_NAME ,,"),
            ("required_mounts", ""),
        ]);
        assert_eq!(cfg.required_env, ["NOMAD_TASK_NAME"]);
        assert!(cfg.required_mounts.is_empty());
        assert!(matches!(
            decide(&cfg, &nomad_container()),
            Decision::Ours(_)
        ));
    }

    #[test]
    fn no_markers_configured_never_claims() {
        let cfg = config(&[("required_env", ""), ("required_mounts", " , ")]);
        assert!(matches!(
            decide(&cfg, &nomad_container()),
            Decision::Abstain
        ));
    }

    #[test]
    fn name_suffix_check() {
        let cfg = config(&[("require_name_suffix", "true")]);
        assert!(matches!(
            decide(&cfg, &nomad_container()),
            Decision::Ours(_)
        ));
        let mut container = nomad_container();
        container.name = "something-else".into();
        assert!(matches!(decide(&cfg, &container), Decision::NotOurs(_)));
        container.name = ALLOC.into();
        assert!(matches!(decide(&cfg, &container), Decision::NotOurs(_)));

        let bad = config(&[("require_name_suffix", "maybe")]);
        assert!(!bad.require_name_suffix);
        assert_eq!(bad.warnings.len(), 1);
    }

    #[test]
    fn long_lists_are_capped() {
        let many = (0..100)
            .map(|i| format!("V{i}"))
            .collect::<Vec<_>>()
            .join(",");
        let cfg = config(&[("required_env", &many)]);
        assert_eq!(cfg.required_env.len(), MAX_MARKERS);
        assert_eq!(cfg.warnings.len(), 1);
    }

    #[test]
    fn long_reasons_are_clipped() {
        let names: Vec<String> = (0..MAX_MARKERS)
            .map(|i| format!("{i}{}", "V".repeat(300)))
            .collect();
        let cfg = config(&[("required_env", &names.join(","))]);
        let Decision::NotOurs(reason) = decide(&cfg, &nomad_container()) else {
            panic!("expected not-ours");
        };
        assert!(
            reason.len() <= MAX_REASON && reason.ends_with('…'),
            "{}",
            reason.len()
        );
    }

    #[test]
    fn root_mount_target() {
        assert_eq!(normalise_target("///"), "/");
        assert_eq!(normalise_target("/alloc//"), "/alloc");
    }
}
