//! `reconciler-match`: is a leftover container Nomad's?

use serde::{Deserialize, Serialize};

use super::{Budget, KeyValue, MAX_REASON, Mount, Refusal, key_values_to_wit};
use crate::policy::bindings::reconciler_match as wit;

/// A container as the reconciler sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct Container {
    /// Full id.
    pub id: String,
    /// Name without the leading `/`.
    pub name: String,
    /// Image reference.
    pub image: String,
    /// Labels.
    pub labels: Vec<KeyValue>,
    /// Environment.
    pub env: Vec<KeyValue>,
    /// Mounts.
    pub mounts: Vec<Mount>,
    /// Creation time, Unix seconds.
    pub created: i64,
    /// Docker state.
    pub state: String,
}

/// A guest's decision for one container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "decision", content = "reason", rename_all = "kebab-case")]
pub enum Decision {
    /// Nomad's and untracked: remove it.
    Ours(String),
    /// Not Nomad's: leave it.
    NotOurs(String),
    /// No opinion.
    Abstain,
}

impl Container {
    pub(crate) fn to_wit(&self) -> wit::Container {
        wit::Container {
            id: self.id.clone(),
            name: self.name.clone(),
            image: self.image.clone(),
            labels: key_values_to_wit(&self.labels),
            env: key_values_to_wit(&self.env),
            mounts: self.mounts.iter().map(Mount::to_wit).collect(),
            created: self.created,
            state: self.state.clone(),
        }
    }
}

impl Decision {
    pub(crate) fn from_wit(raw: wit::Decision, budget: &mut Budget) -> Result<Self, Refusal> {
        Ok(match raw {
            wit::Decision::Ours(reason) => {
                Self::Ours(budget.text("the reason", reason, MAX_REASON)?)
            }
            wit::Decision::NotOurs(reason) => {
                Self::NotOurs(budget.text("the reason", reason, MAX_REASON)?)
            }
            wit::Decision::Abstain => Self::Abstain,
        })
    }
}
