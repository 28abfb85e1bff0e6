#!/usr/bin/env bash
# The wasmdock demo: builds the plugin and the example guests, makes sure a
# Docker engine answers (starting one on Debian/Ubuntu when run as root),
# builds a local demo image without any registry, and runs the scripted
# tour through the dev client (`nomad-driver-wasmdock dev tour`).
source "$(dirname "$0")/lib.sh"

ensure_packages
ensure_rust
ensure_docker

say "building nomad-driver-wasmdock"
cargo build -p wasmdock-host --locked
build_guests --locked
build_demo_image
BIN=target/debug/nomad-driver-wasmdock

say "the plugin's base protocol, as a Nomad agent walks it (dev probe)"
"$BIN" dev probe --config examples/plugin.hcl >/dev/null
say "examples/plugin-invalid.hcl must be refused with the key named"
if out=$("$BIN" dev probe --config examples/plugin-invalid.hcl 2>&1); then
    die "the invalid plugin config was accepted"
fi
grep -F 'refused' <<<"$out" || die "the invalid plugin config failed, but not as a refusal: $out"

say "the tour: four tasks and a dangling container through the real plugin protocol"
"$BIN" dev tour --image "$DEMO_IMAGE" --guests target/wasm32-wasip2/guest
say "done. Next: run a task of your own with \`$BIN dev run examples/tasks/hello.hcl\`"
