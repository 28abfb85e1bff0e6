//! Composing the modules that serve a hook into one decision, applying each
//! module's failure policy.
//!
//! Modules are asked in config order. What a failure (an [`EvalError`])
//! means depends on the hook and the module's `failure_policy`:
//!
//! | hook | `fail` (closed) | `ignore` (open) | `native` |
//! |---|---|---|---|
//! | reconciler-match | the container is kept (not ours) | ask the next module | the native rule decides |
//! | gpu-runtime | the task fails with the error | ask the next module | the native rule decides |
//! | stats-transform | the sample is dropped | the sample goes on unchanged by this module | the original sample is sent |
//! | task-admission | the task is denied | the module is skipped | the module is skipped (there is no native admission rule) |
//!
//! Every call leaves a [`Step`] so the driver can log it and show it in a
//! task event.

use std::time::{Duration, Instant};

use super::hooks::{Input, Output, admission, gpu, reconciler, stats};
use super::{EvalError, PolicyHost, Slot};
use crate::config::policy::{FailurePolicy, Hook};

/// One module's part in a decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// The module.
    pub module: String,
    /// The hook.
    pub hook: Hook,
    /// Time the call took.
    pub latency: Duration,
    /// What it answered, or how it failed.
    pub outcome: Result<String, EvalError>,
    /// The failure policy applied, when it failed.
    pub failure_policy: Option<FailurePolicy>,
}

impl Step {
    fn new(slot: &Slot, hook: Hook, started: Instant, outcome: &Result<Output, EvalError>) -> Self {
        Self {
            module: slot.spec.name.clone(),
            hook,
            latency: started.elapsed(),
            outcome: match outcome {
                Ok(output) => Ok(summarize(output)),
                Err(error) => Err(error.clone()),
            },
            failure_policy: outcome.is_err().then_some(slot.spec.failure_policy),
        }
    }
}

fn summarize(output: &Output) -> String {
    match output {
        Output::ReconcilerMatch(reconciler::Decision::Ours(reason)) => format!("ours: {reason}"),
        Output::ReconcilerMatch(reconciler::Decision::NotOurs(reason)) => {
            format!("not ours: {reason}")
        }
        Output::ReconcilerMatch(reconciler::Decision::Abstain)
        | Output::GpuRuntime(gpu::Decision::Abstain) => "abstain".to_owned(),
        Output::GpuRuntime(gpu::Decision::Select(selection)) => format!(
            "runtime {}, {} device request(s)",
            selection.runtime.as_deref().unwrap_or("(engine default)"),
            selection.device_requests.len()
        ),
        Output::GpuRuntime(gpu::Decision::Reject(message)) => format!("reject: {message}"),
        Output::StatsTransform(stats::Transformed::Keep(_)) => "keep".to_owned(),
        Output::StatsTransform(stats::Transformed::Drop) => "drop".to_owned(),
        Output::TaskAdmission(admission::Decision::Allow) => "allow".to_owned(),
        Output::TaskAdmission(admission::Decision::Deny(reason)) => format!("deny: {reason}"),
        Output::TaskAdmission(admission::Decision::Patch(_)) => "patch".to_owned(),
    }
}

/// What a module's failure leads to, for people (the table above).
pub fn consequence(hook: Hook, policy: FailurePolicy) -> &'static str {
    match (hook, policy) {
        (Hook::ReconcilerMatch, FailurePolicy::Fail) => "the container is kept",
        (Hook::GpuRuntime, FailurePolicy::Fail) => "the task is rejected",
        (Hook::StatsTransform, FailurePolicy::Fail) => "the sample is dropped",
        (Hook::TaskAdmission, FailurePolicy::Fail) => "the task is denied",
        (Hook::StatsTransform, FailurePolicy::Native) => "the original sample is sent",
        (Hook::ReconcilerMatch | Hook::GpuRuntime, FailurePolicy::Native) => {
            "the native rule decides"
        }
        (Hook::StatsTransform, FailurePolicy::Ignore) => "the module is skipped for this sample",
        (_, FailurePolicy::Ignore | FailurePolicy::Native) => "the module is skipped",
    }
}

/// The composed admission decision.
#[derive(Debug, Clone, PartialEq)]
pub enum Admission {
    /// Start the task (with no patch).
    Allow,
    /// Do not start it.
    Deny {
        /// The module that denied (or failed closed).
        module: String,
        /// The reason shown to the task's owner.
        reason: String,
    },
    /// Start it with these patches, applied in order.
    Patch(Vec<(String, admission::Patch)>),
}

impl PolicyHost {
    fn ask(&self, slot: &Slot, input: &Input, steps: &mut Vec<Step>) -> Result<Output, EvalError> {
        let started = Instant::now();
        let outcome = self.evaluate_slot(slot, input);
        steps.push(Step::new(slot, input.hook(), started, &outcome));
        outcome
    }

    /// Whether a container is ours, by the modules serving
    /// reconciler-match; [`reconciler::Decision::Abstain`] means the native
    /// rule decides.
    pub fn decide_container(
        &self,
        container: reconciler::Container,
    ) -> (reconciler::Decision, Vec<Step>) {
        let mut steps = Vec::new();
        let input = Input::ReconcilerMatch(container);
        for slot in self.serving(Hook::ReconcilerMatch) {
            match self.ask(slot, &input, &mut steps) {
                Ok(Output::ReconcilerMatch(reconciler::Decision::Abstain)) => {}
                Ok(Output::ReconcilerMatch(decision)) => return (decision, steps),
                Ok(_) => unreachable!("reconciler-match answers with a reconciler decision"),
                Err(error) => match slot.spec.failure_policy {
                    FailurePolicy::Fail => {
                        let reason = format!(
                            "policy module {} {error}; keeping the container",
                            slot.spec.name
                        );
                        return (reconciler::Decision::NotOurs(reason), steps);
                    }
                    FailurePolicy::Ignore => {}
                    FailurePolicy::Native => return (reconciler::Decision::Abstain, steps),
                },
            }
        }
        (reconciler::Decision::Abstain, steps)
    }

    /// The runtime and devices of a GPU task, by the modules serving
    /// gpu-runtime; [`gpu::Decision::Abstain`] means the native rule.
    pub fn select_gpu(&self, request: gpu::Request) -> (gpu::Decision, Vec<Step>) {
        let mut steps = Vec::new();
        let input = Input::GpuRuntime(request);
        for slot in self.serving(Hook::GpuRuntime) {
            match self.ask(slot, &input, &mut steps) {
                Ok(Output::GpuRuntime(gpu::Decision::Abstain)) => {}
                Ok(Output::GpuRuntime(decision)) => return (decision, steps),
                Ok(_) => unreachable!("gpu-runtime answers with a gpu decision"),
                Err(error) => match slot.spec.failure_policy {
                    FailurePolicy::Fail => {
                        let message = format!("the module {error}");
                        return (gpu::Decision::Reject(message), steps);
                    }
                    FailurePolicy::Ignore => {}
                    FailurePolicy::Native => return (gpu::Decision::Abstain, steps),
                },
            }
        }
        (gpu::Decision::Abstain, steps)
    }

    /// A sample after every module serving stats-transform, in order.
    pub fn transform_sample(&self, input: stats::Input) -> (stats::Transformed, Vec<Step>) {
        let mut steps = Vec::new();
        let original = input.sample.clone();
        let mut input = input;
        let slots: Vec<_> = self.serving(Hook::StatsTransform).collect();
        for slot in slots {
            let wrapped = Input::StatsTransform(input);
            let outcome = self.ask(slot, &wrapped, &mut steps);
            let Input::StatsTransform(back) = wrapped else {
                unreachable!("wrapped above")
            };
            input = back;
            match outcome {
                Ok(Output::StatsTransform(stats::Transformed::Keep(sample))) => {
                    input.sample = sample
                }
                Ok(Output::StatsTransform(stats::Transformed::Drop)) => {
                    return (stats::Transformed::Drop, steps);
                }
                Ok(_) => unreachable!("stats-transform answers with a sample"),
                Err(_) => match slot.spec.failure_policy {
                    FailurePolicy::Fail => return (stats::Transformed::Drop, steps),
                    FailurePolicy::Ignore => {}
                    FailurePolicy::Native => return (stats::Transformed::Keep(original), steps),
                },
            }
        }
        (stats::Transformed::Keep(input.sample), steps)
    }

    /// Whether a task may start, and with which patches, by every module
    /// serving task-admission: all must allow; the first deny wins.
    pub fn admit(&self, request: admission::Request) -> (Admission, Vec<Step>) {
        let mut steps = Vec::new();
        let mut patches = Vec::new();
        let input = Input::TaskAdmission(request);
        for slot in self.serving(Hook::TaskAdmission) {
            match self.ask(slot, &input, &mut steps) {
                Ok(Output::TaskAdmission(admission::Decision::Allow)) => {}
                Ok(Output::TaskAdmission(admission::Decision::Patch(patch))) => {
                    patches.push((slot.spec.name.clone(), patch));
                }
                Ok(Output::TaskAdmission(admission::Decision::Deny(reason))) => {
                    return (
                        Admission::Deny {
                            module: slot.spec.name.clone(),
                            reason,
                        },
                        steps,
                    );
                }
                Ok(_) => unreachable!("task-admission answers with an admission decision"),
                Err(error) => match slot.spec.failure_policy {
                    FailurePolicy::Fail => {
                        return (
                            Admission::Deny {
                                module: slot.spec.name.clone(),
                                reason: format!("the module {error}"),
                            },
                            steps,
                        );
                    }
                    FailurePolicy::Ignore | FailurePolicy::Native => {}
                },
            }
        }
        if patches.is_empty() {
            (Admission::Allow, steps)
        } else {
            (Admission::Patch(patches), steps)
        }
    }
}
