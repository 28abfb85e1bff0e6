//! Architecture invariants of ARCHITECTURE.md, checked on the source tree.

use std::path::{Path, PathBuf};

fn sources() -> Vec<(String, String)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&root, &mut files);
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let rel = p
                .strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            (rel, std::fs::read_to_string(&p).unwrap())
        })
        .collect()
}

/// Whether `line` contains `needle` not preceded by an identifier character
/// (so `eprintln!` does not count as `println!`).
fn mentions(line: &str, needle: &str) -> bool {
    line.match_indices(needle).any(|(at, _)| {
        !line[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
    })
}

/// Files whose code (comments aside) mentions any of `needles`.
fn offenders(needles: &[&str], allowed: &[&str]) -> Vec<String> {
    sources()
        .into_iter()
        .filter(|(rel, _)| !allowed.iter().any(|a| rel.starts_with(a)))
        .filter(|(_, text)| {
            text.lines()
                .map(str::trim_start)
                .filter(|l| !l.starts_with("//"))
                .any(|l| needles.iter().any(|n| mentions(l, n)))
        })
        .map(|(rel, _)| rel)
        .collect()
}

#[test]
fn only_the_handshake_writes_to_stdout() {
    // Stdout is the go-plugin handshake channel; the dev client and the
    // policy authors' tools talk to a terminal and are never the plugin
    // process (both are subcommands chosen before plugin mode starts).
    let found = offenders(
        &["stdout()", "println!", "print!("],
        &["plugin/handshake.rs", "dev/", "cli/policy.rs"],
    );
    assert!(found.is_empty(), "stdout used in {found:?}");
}

#[test]
fn generated_code_is_included_in_one_module() {
    let found = offenders(&["env!(\"OUT_DIR\")"], &["rpc/proto.rs"]);
    assert!(found.is_empty(), "generated code included in {found:?}");
}

#[test]
fn protobuf_types_stay_at_the_edge() {
    let found = offenders(
        &["tonic::", "prost::", "rpc::proto"],
        &["rpc/", "plugin/", "dev/"],
    );
    assert!(
        found.is_empty(),
        "gRPC types used outside the edge in {found:?}"
    );
}

#[test]
fn bollard_stays_in_the_docker_module() {
    let found = offenders(&["bollard::"], &["docker/"]);
    assert!(
        found.is_empty(),
        "bollard used outside docker/ in {found:?}"
    );
}
