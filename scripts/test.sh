#!/usr/bin/env bash
# Runs every check and test: formatting, lints, guest builds, unit, process
# and end-to-end tests (the latter against a real Docker engine).
source "$(dirname "$0")/lib.sh"

ensure_packages
ensure_rust
ensure_disk
ensure_docker

say "formatting"
cargo fmt --all -- --check
say "lints (clippy, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings
build_guests --locked
mapfile -t guest_packages < <(guest_package_args)
cargo clippy --target wasm32-wasip2 --profile guest "${guest_packages[@]}" --locked -- -D warnings
say "tests"
# Figures the tests measure (latencies, counts, memory, fuzz executions)
# are kept in these two directories and printed after the tests, because
# libtest hides a passing test's output.
target=${CARGO_TARGET_DIR:-$ROOT/target}
rm -rf "$target/test-figures" "$target/fuzz-reports"
# A hung test must fail the run with a message, not run into CI's own limit.
status=0
timeout --kill-after=30s 70m cargo test --workspace --locked || status=$?
say "figures the tests measured"
for file in "$target"/test-figures/*.txt "$target"/fuzz-reports/*.txt; do
    [ -f "$file" ] || continue
    printf -- '--- %s\n' "${file#"$target"/}"
    cat "$file"
done
if [ "$status" = 124 ] || [ "$status" = 137 ]; then
    die "the tests did not finish within 70 minutes: one hangs (the harness's \"has been running for over 60 seconds\" lines above name it)"
fi
exit "$status"
