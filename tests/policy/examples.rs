//! The example guests decide as their READMEs say.

use wasmdock_host::config::policy::Hook;
use wasmdock_host::policy::hooks::admission::{self, Decision as Admit};
use wasmdock_host::policy::hooks::gpu::{self, Decision as Gpu};
use wasmdock_host::policy::hooks::reconciler::{Container, Decision as Match};
use wasmdock_host::policy::hooks::stats::{self, Transformed};
use wasmdock_host::policy::hooks::{Input, KeyValue, Mount, Output, TaskIdentity};

use super::{MEMORY, example_input, host, module};

#[test]
fn every_example_answers_its_sample_input() {
    let _shared = MEMORY.read();
    for (crate_name, hook) in [
        ("gpu-runtime", Hook::GpuRuntime),
        ("env-mount-matcher", Hook::ReconcilerMatch),
        ("stats-tagger", Hook::StatsTransform),
        ("image-allowlist", Hook::TaskAdmission),
    ] {
        let host = host(vec![module(
            crate_name,
            crate_name,
            &[("allowed", "registry.local/*")],
        )]);
        let status = &host.status()[0];
        assert_eq!(
            status.loaded.as_ref().unwrap().serves,
            vec![hook],
            "{crate_name} serves only {hook}"
        );
        let outcome = host
            .evaluate(crate_name, &example_input(crate_name, hook))
            .unwrap();
        assert!(outcome.is_ok(), "{crate_name}: {outcome:?}");
    }
}

fn admission_request(image: &str) -> Input {
    Input::TaskAdmission(admission::Request {
        image: image.to_owned(),
        task: TaskIdentity {
            job: "web".into(),
            ..TaskIdentity::default()
        },
        ..admission::Request::default()
    })
}

#[test]
fn image_allowlist_denies_with_its_reason_and_patches_allowed_tasks() {
    let _shared = MEMORY.read();
    let host = host(vec![module(
        "allow",
        "image-allowlist",
        &[
            ("allowed", "registry.local/*,busybox:*"),
            ("label", "admitted-by=allowlist"),
        ],
    )]);
    let denied = host
        .evaluate("allow", &admission_request("evil.example/miner:1"))
        .unwrap();
    let Ok(Output::TaskAdmission(Admit::Deny(reason))) = denied else {
        panic!("expected a deny, got {denied:?}");
    };
    assert!(
        reason.contains("evil.example/miner:1"),
        "the reason names the image: {reason}"
    );
    assert!(
        reason.contains("registry.local/*"),
        "the reason names the allow-list: {reason}"
    );

    let allowed = host
        .evaluate("allow", &admission_request("busybox:1.36"))
        .unwrap();
    let Ok(Output::TaskAdmission(Admit::Patch(patch))) = allowed else {
        panic!("expected a patch, got {allowed:?}");
    };
    assert_eq!(
        patch.set_labels,
        vec![KeyValue::new("admitted-by", "allowlist")]
    );
}

fn gpu_request(env: &[(&str, &str)]) -> Input {
    Input::GpuRuntime(gpu::Request {
        device_env: env.iter().map(|(k, v)| KeyValue::new(*k, *v)).collect(),
        node_runtimes: vec!["runc".into(), "nvidia".into()],
        nvidia_runtime: "nvidia".into(),
        allow_runtimes: vec!["runc".into(), "nvidia".into()],
        ..gpu::Request::default()
    })
}

#[test]
fn gpu_runtime_picks_nvidia_or_cdi_devices_and_abstains_without_gpus() {
    let _shared = MEMORY.read();
    let host = host(vec![
        module("runtime", "gpu-runtime", &[]),
        module("cdi", "gpu-runtime", &[("mode", "cdi")]),
    ]);
    let chosen = host
        .evaluate(
            "runtime",
            &gpu_request(&[("NVIDIA_VISIBLE_DEVICES", "0,1")]),
        )
        .unwrap();
    let Ok(Output::GpuRuntime(Gpu::Select(selection))) = chosen else {
        panic!("expected a selection, got {chosen:?}");
    };
    assert_eq!(selection.runtime.as_deref(), Some("nvidia"));

    let cdi = host
        .evaluate("cdi", &gpu_request(&[("NVIDIA_VISIBLE_DEVICES", "0,1")]))
        .unwrap();
    let Ok(Output::GpuRuntime(Gpu::Select(selection))) = cdi else {
        panic!("expected a selection, got {cdi:?}");
    };
    assert_eq!(selection.runtime, None);
    let ids: Vec<&str> = selection
        .device_requests
        .iter()
        .flat_map(|r| r.device_ids.iter().map(String::as_str))
        .collect();
    assert_eq!(ids, ["nvidia.com/gpu=0", "nvidia.com/gpu=1"]);
    assert!(selection.device_requests.iter().all(|r| r.driver == "cdi"));

    let none = host.evaluate("runtime", &gpu_request(&[])).unwrap();
    assert_eq!(none, Ok(Output::GpuRuntime(Gpu::Abstain)));
}

fn container(env: &[(&str, &str)], mounts: &[&str], labels: &[(&str, &str)]) -> Input {
    Input::ReconcilerMatch(Container {
        id: "c0ffee".into(),
        name: "web-3b6b4a4e-7d2c-4b8e-9a53-5d0f2f2f8f21".into(),
        image: "busybox:1".into(),
        labels: labels.iter().map(|(k, v)| KeyValue::new(*k, *v)).collect(),
        env: env.iter().map(|(k, v)| KeyValue::new(*k, *v)).collect(),
        mounts: mounts
            .iter()
            .map(|target| Mount {
                source: format!("/var/nomad/alloc{target}"),
                target: (*target).to_owned(),
                read_only: false,
            })
            .collect(),
        created: 1_700_000_000,
        state: "running".into(),
    })
}

#[test]
fn env_mount_matcher_claims_nomad_containers_and_spares_others() {
    let _shared = MEMORY.read();
    let host = host(vec![module("match", "env-mount-matcher", &[])]);
    let env = [
        ("NOMAD_ALLOC_ID", "3b6b4a4e-7d2c-4b8e-9a53-5d0f2f2f8f21"),
        ("NOMAD_GROUP_NAME", "web"),
        ("NOMAD_TASK_NAME", "web"),
    ];
    let nomad = host
        .evaluate(
            "match",
            &container(&env, &["/alloc", "/local", "/secrets"], &[]),
        )
        .unwrap();
    assert!(
        matches!(nomad, Ok(Output::ReconcilerMatch(Match::Ours(_)))),
        "{nomad:?}"
    );

    let partial = host
        .evaluate("match", &container(&env[..1], &["/alloc"], &[]))
        .unwrap();
    assert!(
        matches!(partial, Ok(Output::ReconcilerMatch(Match::NotOurs(_)))),
        "{partial:?}"
    );

    let unrelated = host
        .evaluate("match", &container(&[("PATH", "/bin")], &["/data"], &[]))
        .unwrap();
    assert_eq!(unrelated, Ok(Output::ReconcilerMatch(Match::Abstain)));

    let labelled = host
        .evaluate(
            "match",
            &container(
                &env,
                &["/alloc", "/local", "/secrets"],
                &[("com.hashicorp.nomad.alloc_id", "x")],
            ),
        )
        .unwrap();
    assert_eq!(
        labelled,
        Ok(Output::ReconcilerMatch(Match::Abstain)),
        "labelled containers are the native rule's"
    );
}

#[test]
fn stats_tagger_tags_rescales_and_drops() {
    let _shared = MEMORY.read();
    let host = host(vec![module(
        "tag",
        "stats-tagger",
        &[("cpu_scale", "0.5"), ("drop_jobs", "batch-*")],
    )]);
    let Input::StatsTransform(mut input) = example_input("stats-tagger", Hook::StatsTransform)
    else {
        unreachable!()
    };
    input.task = TaskIdentity {
        job: "web".into(),
        group: "frontend".into(),
        task: "nginx".into(),
        namespace: "default".into(),
        ..TaskIdentity::default()
    };
    input.sample.usage.cpu.percent = 40.0;
    let out = host
        .evaluate("tag", &Input::StatsTransform(input.clone()))
        .unwrap();
    let Ok(Output::StatsTransform(Transformed::Keep(sample))) = out else {
        panic!("expected a sample, got {out:?}");
    };
    assert!(
        (sample.usage.cpu.percent - 20.0).abs() < 1e-9,
        "{}",
        sample.usage.cpu.percent
    );
    assert_eq!(sample.timestamp_ns, input.sample.timestamp_ns);
    let keys: Vec<&str> = sample.breakdown.iter().map(|(k, _)| k.as_str()).collect();
    assert!(keys.contains(&"tag:default/web/frontend/nginx"), "{keys:?}");

    input.task.job = "batch-nightly".into();
    let dropped = host.evaluate("tag", &Input::StatsTransform(input)).unwrap();
    assert_eq!(
        dropped,
        Ok(Output::StatsTransform(stats::Transformed::Drop))
    );
}
