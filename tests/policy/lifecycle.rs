//! Reload, pinning, the compiled-module cache, counters and failure
//! policies.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use wasmdock_e2e::guests::{copy_guest, guest};
use wasmdock_host::config::policy::{FailurePolicy, Hook, PolicyConfig};
use wasmdock_host::policy::decide::Admission;
use wasmdock_host::policy::hooks::admission::{self, Decision as Admit};
use wasmdock_host::policy::hooks::reconciler::{Container, Decision as Match};
use wasmdock_host::policy::hooks::{Input, Output, gpu, stats};
use wasmdock_host::policy::reload::Watcher;
use wasmdock_host::policy::{EvalError, HostSettings, Origin, PolicyError, PolicyHost};

use super::{MEMORY, host, module, module_at, settings, with_deadline, with_failure};

fn admit(image: &str) -> Input {
    Input::TaskAdmission(admission::Request {
        image: image.to_owned(),
        ..admission::Request::default()
    })
}

/// Replaces `path` the way deploy tools do: write aside, rename over.
fn replace(path: &std::path::Path, with: &std::path::Path) {
    let aside = path.with_extension("new");
    std::fs::copy(with, &aside).unwrap();
    std::fs::rename(&aside, path).unwrap();
}

#[test]
fn a_changed_module_file_is_reloaded_and_a_broken_one_keeps_the_old_version() {
    let _shared = MEMORY.read();
    let dir = tempfile::tempdir().unwrap();
    let path = copy_guest("counter", dir.path(), "policy.wasm");
    let host = host(vec![module_at("p", &path, &[("allowed", "*")])]);
    assert_eq!(
        host.evaluate("p", &admit("busybox:1")).unwrap(),
        Ok(Output::TaskAdmission(Admit::Deny("call 1".into())))
    );
    let first_sha = host.status()[0].loaded.as_ref().unwrap().sha256();

    replace(&path, &guest("image-allowlist"));
    assert_eq!(host.reload_changed(), vec!["p".to_owned()]);
    assert_eq!(
        host.evaluate("p", &admit("busybox:1")).unwrap(),
        Ok(Output::TaskAdmission(Admit::Allow))
    );
    assert_ne!(
        host.status()[0].loaded.as_ref().unwrap().sha256(),
        first_sha
    );

    std::fs::write(dir.path().join("broken.wasm"), b"\0asm\x0d\0\x01\0garbage").unwrap();
    replace(&path, &dir.path().join("broken.wasm"));
    assert_eq!(
        host.reload_changed(),
        Vec::<String>::new(),
        "a broken file is not swapped in"
    );
    let status = &host.status()[0];
    assert!(
        status
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("does not compile"),
        "{status:?}"
    );
    assert_eq!(
        host.evaluate("p", &admit("busybox:1")).unwrap(),
        Ok(Output::TaskAdmission(Admit::Allow)),
        "the previous version keeps serving"
    );
    assert_eq!(
        host.reload_changed(),
        Vec::<String>::new(),
        "the same broken file is not retried"
    );
}

#[test]
fn calls_already_running_finish_on_the_version_they_started_with() {
    let _shared = MEMORY.read();
    let dir = tempfile::tempdir().unwrap();
    let path = copy_guest("hostile", dir.path(), "policy.wasm");
    let spec = with_deadline(
        module_at("p", &path, &[("behaviour", "loop")]),
        Duration::from_millis(600),
    );
    let host = Arc::new(host(vec![spec]));
    let running = {
        let host = Arc::clone(&host);
        std::thread::spawn(move || host.evaluate("p", &admit("busybox:1")).unwrap())
    };
    #[expect(clippy::disallowed_methods, reason = "a plain test thread")]
    std::thread::sleep(Duration::from_millis(100));
    replace(&path, &guest("counter"));
    assert_eq!(host.reload_changed(), vec!["p".to_owned()]);
    assert_eq!(
        host.evaluate("p", &admit("busybox:1")).unwrap(),
        Ok(Output::TaskAdmission(Admit::Deny("call 1".into()))),
        "new calls use the new version"
    );
    assert!(
        matches!(running.join().unwrap(), Err(EvalError::Timeout { .. })),
        "the call in flight ran to its end on the old (looping) version"
    );
}

#[test]
fn a_pinned_digest_must_match() {
    let _shared = MEMORY.read();
    let mut spec = module("p", "counter", &[]);
    spec.sha256 = Some("0".repeat(64));
    let host = PolicyHost::new(
        settings(true),
        &PolicyConfig {
            module: vec![spec.clone()],
        },
    )
    .unwrap();
    let errors = host.load_errors();
    assert!(
        errors[0].1.contains("sha256") && errors[0].1.contains(&"0".repeat(64)),
        "{errors:?}"
    );

    spec.sha256 = Some(sha256_hex(&guest("counter")).to_uppercase());
    host_loads(spec);
}

/// The SHA-256 of a file, lowercase hex.
fn sha256_hex(path: &std::path::Path) -> String {
    use std::fmt::Write as _;
    let bytes = std::fs::read(path).unwrap();
    let digest = <sha2::Sha256 as sha2::Digest>::digest(&bytes);
    digest.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[test]
fn a_pinned_module_changed_on_disk_is_refused_and_the_running_version_kept() {
    let _shared = MEMORY.read();
    let dir = tempfile::tempdir().unwrap();
    let path = copy_guest("image-allowlist", dir.path(), "policy.wasm");
    let pinned = sha256_hex(&path);
    let mut spec = module_at("p", &path, &[("allowed", "*")]);
    spec.sha256 = Some(pinned.clone());
    let host = Arc::new(host(vec![spec]));
    let allowed = Ok(Output::TaskAdmission(Admit::Allow));
    assert_eq!(host.evaluate("p", &admit("busybox:1")).unwrap(), allowed);

    // Swapped for another (valid, loadable) guest, seen the way the
    // driver sees it: by the reload watcher.
    let intruder = guest("counter");
    let intruder_sha = sha256_hex(&intruder);
    assert_ne!(intruder_sha, pinned);
    let watcher = Watcher::start(Arc::clone(&host), Duration::from_millis(10)).unwrap();
    replace(&path, &intruder);
    let error = {
        let waiting = std::time::Instant::now();
        loop {
            if let Some(error) = host.status()[0].last_error.clone() {
                break error;
            }
            assert!(
                waiting.elapsed() < Duration::from_secs(30),
                "the watcher never tried the changed file"
            );
            std::thread::park_timeout(Duration::from_millis(10));
        }
    };
    drop(watcher);
    assert!(
        error.contains("policy module \"p\"")
            && error.contains(&format!("sha256 is {intruder_sha}"))
            && error.contains(&format!("pins {pinned}")),
        "the refusal names the module, the file's digest and the pin: {error}"
    );
    let status = &host.status()[0];
    assert_eq!(
        status.loaded.as_ref().map(|loaded| loaded.sha256()),
        Some(pinned.clone()),
        "the pinned version stays loaded"
    );
    assert_eq!(
        host.evaluate("p", &admit("busybox:1")).unwrap(),
        allowed,
        "and keeps answering (the counter guest would deny)"
    );
    assert_eq!(
        host.reload_changed(),
        Vec::<String>::new(),
        "the refused file is not tried again until it changes"
    );
    assert_eq!(host.status()[0].last_error.as_deref(), Some(error.as_str()));

    // The pinned file put back is accepted again.
    replace(&path, &guest("image-allowlist"));
    assert_eq!(host.reload_changed(), vec!["p".to_owned()]);
    assert_eq!(host.status()[0].last_error, None);
    assert_eq!(host.evaluate("p", &admit("busybox:1")).unwrap(), allowed);
}

fn host_loads(spec: wasmdock_host::config::policy::PolicyModule) {
    let _ = host(vec![spec]);
}

fn cached_host(dir: &std::path::Path) -> PolicyHost {
    let settings = HostSettings {
        cache_dir: Some(dir.to_owned()),
        ..settings(true)
    };
    PolicyHost::new(
        settings,
        &PolicyConfig {
            module: vec![module("p", "image-allowlist", &[("allowed", "*")])],
        },
    )
    .unwrap()
}

#[test]
fn compiled_modules_are_cached_sealed_and_refused_when_tampered() {
    let _shared = MEMORY.read();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let origin = |host: &PolicyHost| host.status()[0].loaded.as_ref().unwrap().origin;

    assert_eq!(origin(&cached_host(&cache)), Origin::Compiled);
    assert_eq!(
        std::fs::metadata(&cache).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let host = cached_host(&cache);
    assert_eq!(origin(&host), Origin::Cached);
    assert_eq!(
        host.evaluate("p", &admit("busybox:1")).unwrap(),
        Ok(Output::TaskAdmission(Admit::Allow))
    );

    let artifact = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .expect("an artifact");
    let mut bytes = std::fs::read(&artifact).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&artifact, &bytes).unwrap();
    // The host logs why it refused the artifact; the reasons themselves
    // ("its seal does not verify", wrong mode, owner, a symlink) are
    // asserted by the unit tests in host/src/policy/cache.rs.
    let host = cached_host(&cache);
    assert_eq!(
        origin(&host),
        Origin::Compiled,
        "a tampered artifact is not loaded"
    );
    assert_eq!(
        host.evaluate("p", &admit("busybox:1")).unwrap(),
        Ok(Output::TaskAdmission(Admit::Allow))
    );
    assert_eq!(
        origin(&cached_host(&cache)),
        Origin::Cached,
        "and is replaced by a good one"
    );

    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
    let refused = PolicyHost::new(
        HostSettings {
            cache_dir: Some(cache.clone()),
            ..settings(true)
        },
        &PolicyConfig::default(),
    );
    assert!(
        matches!(&refused, Err(PolicyError::Cache(message)) if message.contains("other users")),
        "{refused:?}"
    );
}

#[test]
fn counters_and_latency_are_kept_per_module_and_hook() {
    let _shared = MEMORY.read();
    let host = host(vec![
        module("count", "counter", &[]),
        with_deadline(
            module("loop", "hostile", &[("behaviour", "loop")]),
            Duration::from_millis(20),
        ),
    ]);
    for _ in 0..10 {
        let _ = host.evaluate("count", &admit("busybox:1")).unwrap();
    }
    let _ = host.evaluate("loop", &admit("busybox:1")).unwrap();
    let status = host.status();
    let (hook, count) = status[0].hooks[0];
    assert_eq!(hook, Hook::TaskAdmission);
    assert_eq!((count.calls, count.errors), (10, 0));
    assert!(
        count.p50_us > 0.0 && count.p99_us >= count.p50_us,
        "{count:?}"
    );
    let looping = status[1]
        .hooks
        .iter()
        .find(|(h, _)| *h == Hook::TaskAdmission)
        .unwrap()
        .1;
    assert_eq!((looping.calls, looping.errors, looping.timeouts), (1, 1, 1));
    let attributes = host.attributes();
    assert!(
        attributes.contains(&(
            "policy.count.task-admission.calls".to_owned(),
            "10".to_owned()
        )),
        "{attributes:?}"
    );
    assert!(
        attributes
            .iter()
            .any(|(k, _)| k == "policy.loop.task-admission.p99_us")
    );
}

#[test]
fn failure_policies_decide_what_a_failing_module_means() {
    let _shared = MEMORY.read();
    let trap = |policy| with_failure(module("trap", "hostile", &[("behaviour", "trap")]), policy);

    let closed = host(vec![trap(FailurePolicy::Fail)]);
    let (admission, steps) = closed.admit(admission::Request::default());
    assert!(
        matches!(&admission, Admission::Deny { module, reason } if module == "trap" && reason.contains("trapped")),
        "{admission:?}"
    );
    assert_eq!(steps.len(), 1);
    assert!(steps[0].outcome.is_err() && steps[0].failure_policy == Some(FailurePolicy::Fail));
    let (decision, _) = closed.decide_container(Container::default());
    assert!(
        matches!(decision, Match::NotOurs(_)),
        "fail-closed keeps the container: {decision:?}"
    );
    let (gpu, _) = closed.select_gpu(gpu::Request::default());
    assert!(matches!(gpu, gpu::Decision::Reject(_)), "{gpu:?}");
    let (sample, _) = closed.transform_sample(stats::Input::default());
    assert_eq!(sample, stats::Transformed::Drop);

    let open = host(vec![
        trap(FailurePolicy::Ignore),
        module("allow", "image-allowlist", &[("allowed", "*")]),
    ]);
    let (admission, steps) = open.admit(admission::Request {
        image: "busybox:1".into(),
        ..Default::default()
    });
    assert_eq!(
        admission,
        Admission::Allow,
        "fail-open skips the failing module"
    );
    assert_eq!(steps.len(), 2);

    let native = host(vec![trap(FailurePolicy::Native)]);
    assert_eq!(
        native.decide_container(Container::default()).0,
        Match::Abstain
    );
    assert_eq!(
        native.select_gpu(gpu::Request::default()).0,
        gpu::Decision::Abstain
    );
    let input = stats::Input {
        sample: stats::Sample {
            timestamp_ns: 42,
            ..Default::default()
        },
        ..Default::default()
    };
    assert_eq!(
        native.transform_sample(input.clone()).0,
        stats::Transformed::Keep(input.sample)
    );
}

#[test]
fn composed_admission_stops_at_the_first_deny_and_collects_patches() {
    let _shared = MEMORY.read();
    let host = host(vec![
        module(
            "label",
            "image-allowlist",
            &[("allowed", "*"), ("label", "team=web")],
        ),
        module(
            "deny",
            "image-allowlist",
            &[("allowed", "registry.local/*")],
        ),
    ]);
    let (admission, steps) = host.admit(admission::Request {
        image: "registry.local/app:1".into(),
        ..Default::default()
    });
    let Admission::Patch(patches) = admission else {
        panic!("{admission:?}")
    };
    assert_eq!(patches.len(), 1);
    assert_eq!(patches[0].0, "label");
    assert_eq!(steps.len(), 2);
    let (admission, _) = host.admit(admission::Request {
        image: "busybox:1".into(),
        ..Default::default()
    });
    assert!(
        matches!(admission, Admission::Deny { ref module, .. } if module == "deny"),
        "{admission:?}"
    );
}
