//! The policy host against real guests built from source: the examples do
//! what their READMEs say, hostile guests get typed errors within their
//! deadline while the host keeps serving, and modules reload, pin and cache
//! as configured. No Docker needed; the CLI tests run the plugin binary.

mod cli;
mod examples;
mod hostile;
mod lifecycle;
mod load;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::RwLock;
use std::time::Duration;

use wasmdock_e2e::guests::guest;
use wasmdock_host::config::duration::GoDuration;
use wasmdock_host::config::policy::{FailurePolicy, Hook, PolicyConfig, PolicyModule};
use wasmdock_host::policy::engine::EngineSettings;
use wasmdock_host::policy::hooks::Input;
use wasmdock_host::policy::{HostSettings, PolicyHost};

/// Tests that measure the process's memory take this for writing; every
/// other test holds it for reading, so nothing else allocates meanwhile.
static MEMORY: RwLock<()> = RwLock::new(());

/// A module block for guest crate `crate_name`.
fn module(name: &str, crate_name: &str, config: &[(&str, &str)]) -> PolicyModule {
    module_at(name, &guest(crate_name), config)
}

fn module_at(name: &str, path: &Path, config: &[(&str, &str)]) -> PolicyModule {
    PolicyModule {
        name: name.to_owned(),
        path: path.to_string_lossy().into_owned(),
        config: config
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<BTreeMap<_, _>>(),
        ..PolicyModule::default()
    }
}

fn with_deadline(mut module: PolicyModule, deadline: Duration) -> PolicyModule {
    module.deadline = GoDuration::new(deadline);
    module
}

fn with_failure(mut module: PolicyModule, policy: FailurePolicy) -> PolicyModule {
    module.failure_policy = policy;
    module
}

fn settings(pooling: bool) -> HostSettings {
    HostSettings {
        engine: EngineSettings {
            pooling,
            max_concurrent: 16,
            ..EngineSettings::default()
        },
        ..HostSettings::default()
    }
}

/// A host with these modules, all of which must load.
fn host(modules: Vec<PolicyModule>) -> PolicyHost {
    let host =
        PolicyHost::new(settings(true), &PolicyConfig { module: modules }).expect("policy host");
    assert_eq!(
        host.load_errors(),
        Vec::<(String, String)>::new(),
        "every module loads"
    );
    host
}

/// The sample input shipped with an example guest.
fn example_input(crate_name: &str, hook: Hook) -> Input {
    let path = wasmdock_e2e::plugin::workspace_root()
        .join("examples/guests")
        .join(crate_name)
        .join("input.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Input::from_json(hook, &text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The process's resident memory, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}
