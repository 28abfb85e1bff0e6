#!/usr/bin/env bash
# The wasmdock tour: builds the plugin and example guests, launches the
# plugin exactly as a Nomad agent does, and walks through the protocol.
source "$(dirname "$0")/lib.sh"

ensure_packages
ensure_rust

say "building nomad-driver-wasmdock"
cargo build -p wasmdock-host --locked
build_guests
BIN=target/debug/nomad-driver-wasmdock

say "1/2 launching the plugin like a Nomad agent and sending examples/plugin.hcl"
"$BIN" dev probe --config examples/plugin.hcl

say "2/2 the same with a broken config (examples/plugin-invalid.hcl): it must be refused"
if "$BIN" dev probe --config examples/plugin-invalid.hcl; then
    die "the invalid config was accepted"
fi
say "done: the invalid config was refused with the key named, as Nomad would show it"
