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
build_guests
cargo clippy --target wasm32-wasip2 --profile guest -p hello-policy --locked -- -D warnings
say "tests"
cargo test --workspace --locked
