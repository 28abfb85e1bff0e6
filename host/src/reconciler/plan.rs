//! The reconciler's decision, as a pure function: given the containers the
//! engine lists, the ones the driver tracks, the time and the grace period,
//! which containers go and why.
//!
//! Whether a container is "ours" (started by a Nomad docker driver) is
//! decided behind one seam, [`Matcher`]; [`NativeRule`] is the built-in
//! rule, and a policy module may take the decision instead.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde::Deserialize;

/// The label every task container carries.
pub const ALLOC_ID_LABEL: &str = "com.hashicorp.nomad.alloc_id";

/// A container as the reconciler sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Candidate {
    /// Full id.
    pub id: String,
    /// Name without the leading `/`.
    pub name: String,
    /// Image reference.
    pub image: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Environment (`K=V`), when the container was inspected.
    pub env: Option<Vec<String>>,
    /// Mounts.
    pub mounts: Vec<MountPoint>,
    /// Creation time, Unix seconds.
    pub created: i64,
    /// `running`, `exited`, ….
    pub state: String,
}

/// One mount of a listed container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(from = "MountPointForm")]
pub struct MountPoint {
    /// Host path or volume name.
    pub source: String,
    /// Path inside the container.
    pub destination: String,
    /// Mounted read-only.
    pub read_only: bool,
}

/// A mount in fixtures: the destination alone, or every field.
#[derive(Deserialize)]
#[serde(untagged)]
enum MountPointForm {
    Destination(String),
    Full {
        #[serde(default)]
        source: String,
        destination: String,
        #[serde(default)]
        read_only: bool,
    },
}

impl From<MountPointForm> for MountPoint {
    fn from(form: MountPointForm) -> Self {
        match form {
            MountPointForm::Destination(destination) => Self {
                destination,
                ..Self::default()
            },
            MountPointForm::Full {
                source,
                destination,
                read_only,
            } => Self {
                source,
                destination,
                read_only,
            },
        }
    }
}

/// Prefix of the network pause containers' names (`nomad_init_<alloc id>`).
pub const PAUSE_NAME_PREFIX: &str = "nomad_init_";

/// Whether a container is a network pause container: policies never judge
/// those; the native rule does.
pub fn is_pause(candidate: &Candidate) -> bool {
    candidate.name.starts_with(PAUSE_NAME_PREFIX)
}

/// Whether a container was started by a Nomad docker driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Ours, by the named rule.
    Ours(String),
    /// Not ours.
    NotOurs(String),
    /// No opinion: the next matcher (in the end the native rule) decides.
    Abstain,
}

/// Decides whether a container is ours. Only untracked, running containers
/// past the creation grace reach it.
pub trait Matcher: std::fmt::Debug + Send + Sync {
    /// The decision for `candidate`.
    fn decide(&self, candidate: &Candidate) -> Decision;
}

/// The built-in rule: the alloc_id label; or, for containers from before
/// that label, the three Nomad mounts (`/alloc`, `/local`, `/secrets`), a
/// `<task>-<alloc uuid>` name, and `NOMAD_ALLOC_ID` in the environment
/// equal to that uuid (the seeds' environment check, which keeps
/// look-alikes started by other tools safe).
#[derive(Debug, Clone, Copy, Default)]
pub struct NativeRule;

/// The uuid at the end of `<name>-<uuid>`, if the name has that shape.
pub fn alloc_uuid_suffix(name: &str) -> Option<&str> {
    let name = name.trim_start_matches('/');
    let uuid = name.get(name.len().checked_sub(36)?..)?;
    let dash = name
        .len()
        .checked_sub(37)
        .and_then(|i| name.as_bytes().get(i))?;
    if *dash != b'-' || name.len() < 38 {
        return None;
    }
    let groups: Vec<&str> = uuid.split('-').collect();
    let shape_ok = groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups.iter().all(|g| {
            g.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        });
    shape_ok.then_some(uuid)
}

/// Whether the container has all three Nomad task mounts.
pub fn has_nomad_mounts(candidate: &Candidate) -> bool {
    ["/alloc", "/local", "/secrets"]
        .iter()
        .all(|dest| candidate.mounts.iter().any(|m| m.destination == *dest))
}

/// Whether deciding needs the container's environment (an inspect call):
/// only look-alikes of the legacy shape without the label.
pub fn needs_env(candidate: &Candidate) -> bool {
    !candidate.labels.contains_key(ALLOC_ID_LABEL)
        && has_nomad_mounts(candidate)
        && alloc_uuid_suffix(&candidate.name).is_some()
}

impl Matcher for NativeRule {
    fn decide(&self, candidate: &Candidate) -> Decision {
        if candidate.labels.contains_key(ALLOC_ID_LABEL) {
            return Decision::Ours(format!("label {ALLOC_ID_LABEL}"));
        }
        if !has_nomad_mounts(candidate) {
            return Decision::NotOurs("no alloc_id label and not the Nomad mounts".to_owned());
        }
        let Some(uuid) = alloc_uuid_suffix(&candidate.name) else {
            return Decision::NotOurs("Nomad mounts but not a <task>-<alloc id> name".to_owned());
        };
        let expected = format!("NOMAD_ALLOC_ID={uuid}");
        match &candidate.env {
            Some(env) if env.contains(&expected) => Decision::Ours(
                "Nomad mounts, <task>-<alloc id> name and NOMAD_ALLOC_ID in its environment"
                    .to_owned(),
            ),
            Some(_) => Decision::NotOurs(
                "Nomad mounts and name, but no matching NOMAD_ALLOC_ID in its environment"
                    .to_owned(),
            ),
            None => Decision::NotOurs("environment unknown".to_owned()),
        }
    }
}

/// One container to remove, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    /// Container id.
    pub id: String,
    /// Container name.
    pub name: String,
    /// Seconds since it was created.
    pub age_secs: i64,
    /// The rule that matched.
    pub rule: String,
}

/// The containers to remove: running, not tracked, created at least
/// `grace` before `now`, and ours per `matchers` (the first that does not
/// abstain; the native rule when all abstain). Pause containers go to the
/// native rule directly.
pub fn plan(
    tracked: &HashSet<String>,
    listed: &[Candidate],
    now: i64,
    grace: Duration,
    matchers: &[&dyn Matcher],
) -> Vec<Removal> {
    let cutoff = now.saturating_sub(i64::try_from(grace.as_secs()).unwrap_or(i64::MAX));
    listed
        .iter()
        .filter(|c| c.state == "running")
        .filter(|c| !tracked.contains(&c.id))
        .filter(|c| c.created <= cutoff)
        .filter_map(|c| {
            let asked: &[&dyn Matcher] = if is_pause(c) { &[] } else { matchers };
            let decision = asked
                .iter()
                .map(|m| m.decide(c))
                .find(|d| *d != Decision::Abstain)
                .unwrap_or_else(|| NativeRule.decide(c));
            match decision {
                Decision::Ours(rule) => Some(Removal {
                    id: c.id.clone(),
                    name: c.name.clone(),
                    age_secs: now - c.created,
                    rule,
                }),
                Decision::NotOurs(_) | Decision::Abstain => None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<Candidate> {
        let text = match name {
            "mixed" => include_str!("fixtures/mixed.json"),
            _ => unreachable!("no fixture {name}"),
        };
        serde_json::from_str(text).expect("fixture parses")
    }

    const NOW: i64 = 1_795_392_000;
    const GRACE: Duration = Duration::from_secs(300);

    fn ids(removals: &[Removal]) -> Vec<&str> {
        removals.iter().map(|r| r.id.as_str()).collect()
    }

    #[test]
    fn only_old_untracked_running_nomad_containers_go() {
        let listed = fixture("mixed");
        let tracked = HashSet::from(["tracked-task".to_owned(), "pause".to_owned()]);
        let removals = plan(&tracked, &listed, NOW, GRACE, &[]);
        assert_eq!(ids(&removals), ["dangling-labelled", "legacy-with-env"]);
        assert_eq!(removals[0].rule, format!("label {ALLOC_ID_LABEL}"));
        assert_eq!(removals[0].age_secs, 3600);
        assert!(
            removals[1].rule.contains("NOMAD_ALLOC_ID"),
            "{:?}",
            removals[1]
        );
    }

    #[test]
    fn the_grace_period_is_inclusive_at_the_cutoff() {
        let mut listed = fixture("mixed");
        listed.retain(|c| c.id == "dangling-labelled");
        listed[0].created = NOW - 300;
        assert_eq!(plan(&HashSet::new(), &listed, NOW, GRACE, &[]).len(), 1);
        listed[0].created = NOW - 299;
        assert!(plan(&HashSet::new(), &listed, NOW, GRACE, &[]).is_empty());
    }

    #[derive(Debug)]
    struct Fixed(Decision);
    impl Matcher for Fixed {
        fn decide(&self, _: &Candidate) -> Decision {
            self.0.clone()
        }
    }

    #[test]
    fn a_matcher_decides_and_abstaining_falls_back_to_the_native_rule() {
        let listed = fixture("mixed");
        let tracked = HashSet::from(["tracked-task".to_owned(), "pause".to_owned()]);
        let nothing = Fixed(Decision::NotOurs("policy says no".to_owned()));
        assert!(plan(&tracked, &listed, NOW, GRACE, &[&nothing]).is_empty());
        let abstain = Fixed(Decision::Abstain);
        assert_eq!(
            ids(&plan(&tracked, &listed, NOW, GRACE, &[&abstain])),
            ["dangling-labelled", "legacy-with-env"]
        );
        let everything = Fixed(Decision::Ours("policy".to_owned()));
        let removals = plan(&tracked, &listed, NOW, GRACE, &[&everything]);
        assert!(
            !ids(&removals).contains(&"tracked-task") && !ids(&removals).contains(&"pause"),
            "tracked containers never reach a matcher"
        );
        assert!(!ids(&removals).contains(&"young"), "nor young ones");
        assert!(!ids(&removals).contains(&"stopped"), "nor stopped ones");
    }

    /// Claims every container it is asked about, and remembers which.
    #[derive(Debug, Default)]
    struct Recording(std::sync::Mutex<Vec<String>>);
    impl Matcher for Recording {
        fn decide(&self, candidate: &Candidate) -> Decision {
            self.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(candidate.id.clone());
            Decision::Ours("the policy claims it".to_owned())
        }
    }

    #[test]
    fn tracked_and_pause_containers_never_reach_a_matcher() {
        let mut listed = fixture("mixed");
        // Two untracked pause containers: one that lost its label (the
        // native rule keeps it) and one with it (the native rule removes
        // it). A matcher that claims everything would remove both.
        let mut labelled_pause = listed
            .iter()
            .find(|c| c.id == "pause")
            .cloned()
            .expect("the fixture has a pause container");
        labelled_pause.id = "labelled-pause".to_owned();
        labelled_pause.name = format!("{PAUSE_NAME_PREFIX}0a1b2c3d-0000-4000-8000-00000000f00d");
        for candidate in listed.iter_mut().filter(|c| c.id == "pause") {
            candidate.labels.remove(ALLOC_ID_LABEL);
        }
        listed.push(labelled_pause);
        assert_eq!(listed.iter().filter(|c| is_pause(c)).count(), 2);
        let tracked = HashSet::from(["tracked-task".to_owned()]);
        let recording = Recording::default();

        let removals = plan(&tracked, &listed, NOW, GRACE, &[&recording]);

        let asked = recording.0.into_inner().unwrap();
        assert_eq!(
            asked,
            [
                "dangling-labelled",
                "legacy-with-env",
                "legacy-lookalike",
                "unrelated",
                "host-with-alloc-mount",
            ],
            "only untracked, old, running, non-pause containers are asked about"
        );
        let removed = ids(&removals);
        assert!(
            !removed.contains(&"pause"),
            "the unlabelled pause container is the native rule's to judge, and it keeps it: {removals:?}"
        );
        assert!(!removed.contains(&"tracked-task"), "{removals:?}");
        let labelled = removals
            .iter()
            .find(|r| r.id == "labelled-pause")
            .expect("the labelled untracked pause container goes by the native rule");
        assert_eq!(labelled.rule, format!("label {ALLOC_ID_LABEL}"));
        for claimed in &asked {
            let removal = removals
                .iter()
                .find(|r| r.id == *claimed)
                .unwrap_or_else(|| panic!("{claimed} was claimed: {removals:?}"));
            assert_eq!(removal.rule, "the policy claims it");
        }
        assert_eq!(removals.len(), asked.len() + 1, "{removals:?}");
    }

    #[test]
    fn names_and_env_needs() {
        assert_eq!(
            alloc_uuid_suffix("/web-4f1c93e0-9a3b-4d5e-8f00-0123456789ab"),
            Some("4f1c93e0-9a3b-4d5e-8f00-0123456789ab")
        );
        for bad in [
            "web",
            "4f1c93e0-9a3b-4d5e-8f00-0123456789ab",
            "web_4f1c93e0-9a3b-4d5e-8f00-0123456789ab",
            "web-4F1C93E0-9A3B-4D5E-8F00-0123456789AB",
            "web-4f1c93e09a3b-4d5e-8f00-0123456789ab0",
        ] {
            assert_eq!(alloc_uuid_suffix(bad), None, "{bad}");
        }
        let listed = fixture("mixed");
        let needing: Vec<&str> = listed
            .iter()
            .filter(|c| needs_env(c))
            .map(|c| c.id.as_str())
            .collect();
        assert_eq!(needing, ["legacy-with-env", "legacy-lookalike"]);
    }
}
