//! Task admission by image allow-list.
//!
//! A task starts only if its image matches one of the glob patterns in the
//! `allowed` config key; with `label = "key=value"` set, admitted tasks get
//! that label. Images and patterns are compared in Docker's normalised
//! form, so `busybox`, `library/busybox:latest` and
//! `docker.io/library/busybox:latest` are the same image (README.md has the
//! exact rules).
//!
//! The decision logic is [`decide`], a plain function of the configuration
//! and the request; the hook only reads the config and logs the outcome.

use wasmdock_guest_sdk::limits::{MAX_REASON, clip};
use wasmdock_guest_sdk::task_admission::{Decision, Patch, Request};
use wasmdock_guest_sdk::{KeyValue, TaskAdmission, host};

/// The registry Docker assumes when a reference names none.
const DEFAULT_DOMAIN: &str = "docker.io";
/// Docker Hub's namespace for official images.
const OFFICIAL_NAMESPACE: &str = "library";
/// The tag Docker assumes when a reference has neither tag nor digest.
const DEFAULT_TAG: &str = "latest";
/// At most this many patterns are quoted in a denial.
const MAX_QUOTED_PATTERNS: usize = 16;
/// Untrusted text quoted in a denial is cut to this many bytes.
const MAX_QUOTED_LEN: usize = 256;
/// The host takes label keys of at most 256 bytes and values of 16 KiB.
const MAX_LABEL_KEY: usize = 256;
const MAX_LABEL_VALUE: usize = 16 * 1024;

/// This module's `config { }` block, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Config {
    /// `allowed`: the patterns as written, for messages.
    written: Vec<String>,
    /// The same patterns, normalised like image references.
    patterns: Vec<String>,
    /// `label`: the label set on admitted tasks.
    label: Option<(String, String)>,
    /// Problems found while reading the config (logged as warnings).
    warnings: Vec<String>,
}

impl Config {
    fn load(get: impl Fn(&str) -> Option<String>) -> Self {
        let mut warnings = Vec::new();
        let written: Vec<String> = get("allowed")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect();
        let patterns = written.iter().map(|p| normalise_pattern(p)).collect();
        let label = match get("label") {
            None => None,
            Some(raw) => match raw.split_once('=') {
                Some((key, value))
                    if !key.trim().is_empty()
                        && key.trim().len() <= MAX_LABEL_KEY
                        && value.trim().len() <= MAX_LABEL_VALUE =>
                {
                    Some((key.trim().to_owned(), value.trim().to_owned()))
                }
                _ => {
                    warnings.push(clip(
                        format!(
                            "config label = {raw:?} is not key=value with a key of at most \
                             {MAX_LABEL_KEY} bytes; no label is set"
                        ),
                        1024,
                    ));
                    None
                }
            },
        };
        Self {
            written,
            patterns,
            label,
            warnings,
        }
    }
}

/// A reference split into Docker's parts.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Parts<'a> {
    domain: Option<&'a str>,
    path: &'a str,
    tag: Option<&'a str>,
    digest: Option<&'a str>,
}

/// Splits `name[:tag][@digest]`, where name is `[domain/]path`. The first
/// component is a domain when more components follow and it contains `.`
/// or `:`, or is `localhost` (Docker's rule). With `wildcard_domain`, a
/// first component holding `*` counts as a domain too (for patterns).
fn split(reference: &str, wildcard_domain: bool) -> Parts<'_> {
    let (name, digest) = match reference.split_once('@') {
        Some((name, digest)) => (name, Some(digest)),
        None => (reference, None),
    };
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match name[last_slash..].rfind(':') {
        Some(colon) => (
            &name[..last_slash + colon],
            Some(&name[last_slash + colon + 1..]),
        ),
        None => (name, None),
    };
    let (domain, path) = match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || (wildcard_domain && first.contains('*')) =>
        {
            (Some(first), rest)
        }
        _ => (None, name),
    };
    Parts {
        domain,
        path,
        tag,
        digest,
    }
}

fn join(parts: &Parts<'_>, default_tag: bool) -> String {
    let domain = match parts.domain {
        None | Some("index.docker.io" | "registry-1.docker.io") => DEFAULT_DOMAIN,
        Some(domain) => domain,
    };
    let mut out = String::with_capacity(domain.len() + parts.path.len() + 32);
    out.push_str(domain);
    out.push('/');
    // Official images live under `library/`; `docker.io/*` (a wildcard
    // path after an explicit Docker Hub domain) spans every namespace.
    let wildcard_path = parts.domain.is_some() && parts.path.contains('*');
    if domain == DEFAULT_DOMAIN && !parts.path.contains('/') && !wildcard_path {
        out.push_str(OFFICIAL_NAMESPACE);
        out.push('/');
    }
    out.push_str(parts.path);
    match parts.tag {
        Some(tag) => {
            out.push(':');
            out.push_str(tag);
        }
        None if default_tag && parts.digest.is_none() => {
            out.push(':');
            out.push_str(DEFAULT_TAG);
        }
        None => {}
    }
    if let Some(digest) = parts.digest {
        out.push('@');
        out.push_str(digest);
    }
    out
}

/// Docker's normalised form: `busybox` → `docker.io/library/busybox:latest`.
fn normalise_image(reference: &str) -> String {
    join(&split(reference, false), true)
}

/// Normalises a pattern like an image, except that `*` alone matches
/// everything, a pattern ending in `*` gets no default tag, and a first
/// component with `*` in it (`*/team/*`) is a registry pattern.
fn normalise_pattern(pattern: &str) -> String {
    if pattern == "*" {
        return pattern.to_owned();
    }
    join(&split(pattern, true), !pattern.ends_with('*'))
}

/// Glob match where `*` stands for any run of characters (including `/`
/// and `:`) and everything else matches itself. Linear in practice, never
/// worse than `pattern.len() * text.len()`, and never recursive.
fn glob_matches(pattern: &str, text: &str) -> bool {
    let (pattern, text) = (pattern.as_bytes(), text.as_bytes());
    let (mut p, mut t) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                backtrack = Some((p, t));
                p += 1;
            }
            Some(&c) if c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match backtrack {
                Some((star, start)) => {
                    p = star + 1;
                    t = start + 1;
                    backtrack = Some((star, start + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Cuts untrusted text for quoting in a message.
fn quote(text: &str) -> String {
    if text.len() <= MAX_QUOTED_LEN {
        return format!("{text:?}");
    }
    let cut = (0..=MAX_QUOTED_LEN)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    format!("{:?}…", &text[..cut])
}

/// Decides for one request.
fn decide(config: &Config, request: &Request) -> Decision {
    if config.patterns.is_empty() {
        return Decision::Deny(format!(
            "image {} is not allowed: the image allow-list is empty \
             (the image-allowlist policy's `allowed` setting lists no patterns)",
            quote(&request.image)
        ));
    }
    let image = request.image.trim();
    if image.is_empty() {
        return Decision::Deny("the task names no image".to_owned());
    }
    let normalised = normalise_image(image);
    if !config.patterns.iter().any(|p| glob_matches(p, &normalised)) {
        let mut listed = config
            .written
            .iter()
            .take(MAX_QUOTED_PATTERNS)
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        if config.written.len() > MAX_QUOTED_PATTERNS {
            listed.push_str(&format!(
                " and {} more",
                config.written.len() - MAX_QUOTED_PATTERNS
            ));
        }
        return Decision::Deny(clip(
            format!(
                "image {} ({}) is not allowed: it matches none of the allowed patterns: {listed}",
                quote(image),
                quote(&normalised)
            ),
            MAX_REASON,
        ));
    }
    match &config.label {
        Some((key, value)) => Decision::Patch(Patch {
            set_labels: vec![KeyValue {
                key: key.clone(),
                value: value.clone(),
            }],
            set_env: Vec::new(),
            unset_env: Vec::new(),
            runtime: None,
            memory_max_mb: None,
            pids_limit: None,
            cap_drop: Vec::new(),
            cap_add: Vec::new(),
            security_opt: Vec::new(),
        }),
        None => Decision::Allow,
    }
}

struct Policy;

impl TaskAdmission for Policy {
    fn admit(request: Request) -> Decision {
        let config = Config::load(host::config);
        for warning in &config.warnings {
            host::warn(warning, &[]);
        }
        let decision = decide(&config, &request);
        let fields = [
            ("job", request.task.job.as_str()),
            ("task", request.task.task.as_str()),
            ("image", request.image.as_str()),
        ];
        match &decision {
            Decision::Deny(reason) => {
                host::warn("image denied", &[fields[0], fields[1], ("reason", reason)]);
            }
            Decision::Allow | Decision::Patch(_) => host::info("image allowed", &fields),
        }
        decision
    }
}

wasmdock_guest_sdk::export!(Policy => [task_admission]);

#[cfg(test)]
mod tests {
    use super::*;
    use wasmdock_guest_sdk::TaskIdentity;
    use wasmdock_guest_sdk::task_admission::{Resources, Security};

    fn config(pairs: &[(&str, &str)]) -> Config {
        Config::load(|key| {
            pairs
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    fn request(image: &str) -> Request {
        Request {
            task: TaskIdentity {
                job: "web".into(),
                group: "web".into(),
                task: "server".into(),
                alloc_id: "a1".into(),
                namespace: "default".into(),
                node_id: "n1".into(),
                node_name: "node-1".into(),
            },
            image: image.into(),
            labels: Vec::new(),
            env: Vec::new(),
            mounts: Vec::new(),
            devices: Vec::new(),
            resources: Resources {
                cpu_shares: 100,
                memory_mb: 64,
                memory_max_mb: 0,
                cpu_hard_limit: false,
                pids_limit: 0,
            },
            security: Security {
                privileged: false,
                cap_add: Vec::new(),
                cap_drop: Vec::new(),
                security_opt: Vec::new(),
                runtime: None,
                network_mode: None,
            },
        }
    }

    fn allowed(cfg: &Config, image: &str) -> bool {
        !matches!(decide(cfg, &request(image)), Decision::Deny(_))
    }

    #[test]
    fn normalises_like_docker() {
        for (image, want) in [
            ("busybox", "docker.io/library/busybox:latest"),
            ("busybox:1.36", "docker.io/library/busybox:1.36"),
            ("library/busybox", "docker.io/library/busybox:latest"),
            (
                "index.docker.io/library/busybox",
                "docker.io/library/busybox:latest",
            ),
            ("grafana/grafana:11", "docker.io/grafana/grafana:11"),
            ("registry.local/app", "registry.local/app:latest"),
            (
                "registry.local:5000/team/app:2",
                "registry.local:5000/team/app:2",
            ),
            ("localhost/app", "localhost/app:latest"),
            ("busybox@sha256:abc", "docker.io/library/busybox@sha256:abc"),
            (
                "busybox:1@sha256:abc",
                "docker.io/library/busybox:1@sha256:abc",
            ),
        ] {
            assert_eq!(normalise_image(image), want, "{image}");
        }
    }

    #[test]
    fn normalises_patterns() {
        for (pattern, want) in [
            ("*", "*"),
            ("busybox", "docker.io/library/busybox:latest"),
            ("busybox:*", "docker.io/library/busybox:*"),
            ("registry.local/*", "registry.local/*"),
            ("myorg/*", "docker.io/myorg/*"),
            ("*/team/*", "*/team/*"),
            ("docker.io/*", "docker.io/*"),
            ("busybox*", "docker.io/library/busybox*"),
            ("docker.io/busybox", "docker.io/library/busybox:latest"),
        ] {
            assert_eq!(normalise_pattern(pattern), want, "{pattern}");
        }
    }

    #[test]
    fn glob() {
        assert!(glob_matches("*", ""));
        assert!(glob_matches("a*c", "abbbc"));
        assert!(glob_matches("a*b*c", "axxbyyc"));
        assert!(glob_matches(
            "*a*a*a*a*a*b",
            &format!("{}b", "a".repeat(50))
        ));
        assert!(!glob_matches("*a*a*a*a*a*b", &"a".repeat(200)));
        assert!(!glob_matches("abc", "abcd"));
        assert!(!glob_matches("abc*d", "abc"));
        assert!(glob_matches("é*", "éa"));
    }

    #[test]
    fn allows_matching_images() {
        let cfg = config(&[("allowed", "registry.local/*, busybox:*")]);
        assert!(matches!(
            decide(&cfg, &request("registry.local/team/app:3")),
            Decision::Allow
        ));
        assert!(allowed(&cfg, "busybox"));
        assert!(allowed(&cfg, "docker.io/library/busybox:1.36"));
        assert!(allowed(&cfg, "busybox:1.36@sha256:abc"));
        // A digest-only reference has no tag for `:*` to match.
        assert!(!allowed(&cfg, "busybox@sha256:abc"));
        assert!(allowed(
            &config(&[("allowed", "busybox@*")]),
            "busybox@sha256:abc"
        ));
        assert!(!allowed(&cfg, "alpine"));
        assert!(!allowed(&cfg, "evil.example/registry.local/app"));
        assert!(!allowed(&cfg, "registry.local.evil.example/app"));
    }

    #[test]
    fn plain_name_pattern_means_latest() {
        let cfg = config(&[("allowed", "busybox")]);
        assert!(allowed(&cfg, "busybox"));
        assert!(allowed(&cfg, "busybox:latest"));
        assert!(!allowed(&cfg, "busybox:1.36"));
    }

    #[test]
    fn denies_with_the_image_and_the_patterns() {
        let cfg = config(&[("allowed", "registry.local/*,busybox:*")]);
        let Decision::Deny(reason) = decide(&cfg, &request("alpine:3")) else {
            panic!("expected a denial");
        };
        assert_eq!(
            reason,
            "image \"alpine:3\" (\"docker.io/library/alpine:3\") is not allowed: \
             it matches none of the allowed patterns: registry.local/*, busybox:*"
        );
    }

    #[test]
    fn empty_allow_list_denies_everything() {
        for cfg in [config(&[]), config(&[("allowed", " , ")])] {
            let Decision::Deny(reason) = decide(&cfg, &request("busybox")) else {
                panic!("expected a denial");
            };
            assert!(reason.contains("allow-list is empty"), "{reason}");
        }
    }

    #[test]
    fn empty_image_is_denied() {
        let cfg = config(&[("allowed", "*")]);
        assert!(!allowed(&cfg, "  "));
        assert!(allowed(&cfg, "anything/at:all"));
    }

    #[test]
    fn labels_admitted_tasks() {
        let cfg = config(&[("allowed", "*"), ("label", "policy.example/checked = yes")]);
        let Decision::Patch(patch) = decide(&cfg, &request("busybox")) else {
            panic!("expected a patch");
        };
        assert_eq!(patch.set_labels.len(), 1);
        assert_eq!(patch.set_labels[0].key, "policy.example/checked");
        assert_eq!(patch.set_labels[0].value, "yes");
        assert!(patch.cap_add.is_empty() && patch.runtime.is_none());

        let bad = config(&[("allowed", "*"), ("label", "=x")]);
        assert_eq!(bad.warnings.len(), 1);
        assert!(matches!(decide(&bad, &request("busybox")), Decision::Allow));
    }

    #[test]
    fn hostile_images_do_not_panic_and_are_quoted_briefly() {
        let cfg = config(&[("allowed", "registry.local/*")]);
        for image in ["@", ":", "/", "//::@@", "a:b:c/d@e@f", "é:é/é@é", "\u{0}"] {
            let _ = decide(&cfg, &request(image));
        }
        let long = format!("{}é", "x".repeat(10_000));
        let Decision::Deny(reason) = decide(&cfg, &request(&long)) else {
            panic!("expected a denial");
        };
        assert!(reason.len() < 1_000, "{}", reason.len());
    }

    #[test]
    fn long_patterns_keep_the_reason_short() {
        let huge = format!("{}/*", "r".repeat(2000));
        let cfg = config(&[("allowed", &format!("{huge},{huge},{huge}"))]);
        let Decision::Deny(reason) = decide(&cfg, &request("busybox")) else {
            panic!("expected a denial");
        };
        assert!(
            reason.len() <= MAX_REASON && reason.ends_with('…'),
            "{}",
            reason.len()
        );
        let bad = config(&[
            ("allowed", "*"),
            ("label", &format!("{}=x", "k".repeat(300))),
        ]);
        assert!(bad.label.is_none() && bad.warnings.len() == 1);
    }

    #[test]
    fn many_patterns_are_summarised() {
        let many = (0..40)
            .map(|i| format!("r{i}.local/*"))
            .collect::<Vec<_>>()
            .join(",");
        let cfg = config(&[("allowed", &many)]);
        let Decision::Deny(reason) = decide(&cfg, &request("busybox")) else {
            panic!("expected a denial");
        };
        assert!(reason.ends_with("and 24 more"), "{reason}");
    }
}
