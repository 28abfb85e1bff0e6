//! Registry credentials, looked up the way Nomad's docker driver does:
//! the task's `auth` block, else the plugin's docker `config.json`
//! (`auths`, then `credHelpers`, then `credsStore`), else the plugin's
//! credential helper (`docker-credential-<helper> get`).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use serde::Deserialize;
use tokio::io::AsyncWriteExt as _;

use super::image::RegistryAuth;

/// The key Docker's config uses for Docker Hub.
const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";
/// How long a credential helper may take.
const HELPER_TIMEOUT: Duration = Duration::from_secs(30);

/// The registry host of an image repository (`docker.io` for Hub images).
pub fn registry_host(repository: &str) -> String {
    match repository.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            first.to_owned()
        }
        _ => "docker.io".to_owned(),
    }
}

#[derive(Debug, Default, Deserialize)]
struct DockerConfigFile {
    #[serde(default)]
    auths: std::collections::BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: std::collections::BTreeMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: String,
}

#[derive(Debug, Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

#[derive(Debug, Deserialize)]
struct HelperAnswer {
    #[serde(rename = "Username")]
    username: String,
    #[serde(rename = "Secret")]
    secret: String,
}

/// Credentials from a docker `config.json` for `host`, or from the helper it
/// names for that host. `Ok(None)` when it has none.
pub async fn from_config_file(path: &Path, host: &str) -> Result<Option<RegistryAuth>, String> {
    let text = tokio::fs::read_to_string(path)
        .await
        .map_err(|e| format!("cannot read docker auth config {}: {e}", path.display()))?;
    let config: DockerConfigFile = serde_json::from_str(&text)
        .map_err(|e| format!("docker auth config {} is not valid: {e}", path.display()))?;
    let key = if host == "docker.io" {
        DOCKER_HUB_KEY
    } else {
        host
    };
    let entry = config.auths.get(key).or_else(|| {
        // Legacy keys are URLs (`https://quay.io/v1/`): compare host names.
        config
            .auths
            .iter()
            .find(|(k, _)| {
                url_host(k) == host || (host == "docker.io" && url_host(k) == "index.docker.io")
            })
            .map(|(_, v)| v)
    });
    if let Some(entry) = entry {
        return decode_entry(entry, host).map(Some);
    }
    if let Some(helper) = config.cred_helpers.get(host) {
        return from_helper(helper, host).await.map(Some);
    }
    if !config.creds_store.is_empty() {
        return from_helper(&config.creds_store, host).await.map(Some);
    }
    Ok(None)
}

fn url_host(key: &str) -> &str {
    let without_scheme = key.split_once("://").map_or(key, |(_, rest)| rest);
    without_scheme.split('/').next().unwrap_or(without_scheme)
}

fn decode_entry(entry: &AuthEntry, host: &str) -> Result<RegistryAuth, String> {
    if !entry.username.is_empty() || entry.auth.is_empty() {
        return Ok(RegistryAuth {
            username: entry.username.clone(),
            password: entry.password.clone(),
            server_address: host.to_owned(),
        });
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(entry.auth.trim())
        .map_err(|_| format!("the auth entry for {host} is not base64"))?;
    let decoded = String::from_utf8(decoded)
        .map_err(|_| format!("the auth entry for {host} is not UTF-8"))?;
    let (username, password) = decoded
        .split_once(':')
        .ok_or_else(|| format!("the auth entry for {host} is not user:password"))?;
    Ok(RegistryAuth {
        username: username.to_owned(),
        password: password.to_owned(),
        server_address: host.to_owned(),
    })
}

/// Asks `docker-credential-<helper>` for `host`'s credentials.
pub async fn from_helper(helper: &str, host: &str) -> Result<RegistryAuth, String> {
    if helper.is_empty()
        || !helper
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(format!("invalid credential helper name {helper:?}"));
    }
    run_helper(Path::new(&format!("docker-credential-{helper}")), host).await
}

/// Runs a credential helper program (found through PATH when relative).
async fn run_helper(program: &Path, host: &str) -> Result<RegistryAuth, String> {
    let program = program.display().to_string();
    let run = async {
        let mut child = tokio::process::Command::new(&program)
            .arg("get")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot run {program}: {e}"))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(host.as_bytes())
                .await
                .map_err(|e| format!("cannot talk to {program}: {e}"))?;
        }
        let output = child
            .wait_with_output()
            .await
            .map_err(|e| format!("{program} failed: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "{program} failed for {host}: {}",
                String::from_utf8_lossy(&output.stdout).trim()
            ));
        }
        let answer: HelperAnswer = serde_json::from_slice(&output.stdout)
            .map_err(|e| format!("{program} answered something else: {e}"))?;
        Ok(RegistryAuth {
            username: answer.username,
            password: answer.secret,
            server_address: host.to_owned(),
        })
    };
    tokio::time::timeout(HELPER_TIMEOUT, run)
        .await
        .map_err(|_| format!("{program} did not answer in time"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_hosts() {
        assert_eq!(registry_host("busybox"), "docker.io");
        assert_eq!(registry_host("library/redis"), "docker.io");
        assert_eq!(registry_host("quay.io/team/app"), "quay.io");
        assert_eq!(registry_host("127.0.0.1:5000/app"), "127.0.0.1:5000");
        assert_eq!(registry_host("localhost/app"), "localhost");
    }

    #[tokio::test]
    async fn config_file_lookups() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let hub = base64::engine::general_purpose::STANDARD.encode("hubuser:hubpass");
        std::fs::write(
            &path,
            format!(
                r#"{{"auths": {{"{DOCKER_HUB_KEY}": {{"auth": "{hub}"}}, "https://quay.io/v1/": {{"username": "q", "password": "p"}}, "other.io": {{"auth": "bm9jb2xvbg=="}}}}}}"#
            ),
        )
        .unwrap();
        let auth = from_config_file(&path, "docker.io").await.unwrap().unwrap();
        assert_eq!(
            (auth.username.as_str(), auth.password.as_str()),
            ("hubuser", "hubpass")
        );
        let auth = from_config_file(&path, "quay.io").await.unwrap().unwrap();
        assert_eq!((auth.username.as_str(), auth.password.as_str()), ("q", "p"));
        assert!(
            from_config_file(&path, "other.io")
                .await
                .unwrap_err()
                .contains("user:password")
        );
        assert_eq!(from_config_file(&path, "unknown.io").await.unwrap(), None);
        assert!(
            from_config_file(&dir.path().join("missing.json"), "x")
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn helpers_are_run_with_the_host_on_stdin() {
        let dir = tempfile::tempdir().unwrap();
        let helper = dir.path().join("docker-credential-wasmdocktest");
        std::fs::write(
            &helper,
            "#!/bin/sh\nread host\n[ \"$1\" = get ] || exit 3\nprintf '{\"Username\":\"u-%s\",\"Secret\":\"s\"}' \"$host\"\n",
        )
        .unwrap();
        std::fs::set_permissions(&helper, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let auth = run_helper(&helper, "registry.local:5000").await.unwrap();
        assert_eq!(auth.username, "u-registry.local:5000");
        assert_eq!(auth.password, "s");
        assert!(
            from_helper("../evil", "x")
                .await
                .unwrap_err()
                .contains("invalid credential helper")
        );
        assert!(
            from_helper("wasmdock-missing-helper", "x")
                .await
                .unwrap_err()
                .contains("cannot run")
        );
    }
}
