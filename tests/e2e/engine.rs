//! The engine every end-to-end test needs.

#[test]
fn a_docker_engine_is_reachable() {
    let version =
        wasmdock_e2e::docker_server_version().unwrap_or_else(|message| panic!("{message}"));
    let major: u32 = version
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    assert!(
        major >= 20,
        "Docker {version} is older than the 20.10 API the driver targets"
    );
}
