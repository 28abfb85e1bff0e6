#!/usr/bin/env bash
# Runs every check and test: formatting, lints, guest builds, unit, process
# and end-to-end tests (the latter against a real Docker engine).
source "$(dirname "$0")/lib.sh"

ensure_packages
ensure_rust
ensure_docker

say "formatting"
cargo fmt --all -- --check
say "lints (clippy, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings
build_guests --locked
mapfile -t guest_packages < <(guest_package_args)
cargo clippy --target wasm32-wasip2 --profile guest "${guest_packages[@]}" --locked -- -D warnings
say "tests"
cargo test --workspace --locked
