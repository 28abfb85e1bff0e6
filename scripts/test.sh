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
mkdir -p "$target"
output="$target/test-output.log"
set +e
timeout --kill-after=30s 70m cargo test --workspace --locked 2>&1 | tee "$output"
status=${PIPESTATUS[0]}
set -e
say "figures the tests measured"
for file in "$target"/test-figures/*.txt "$target"/fuzz-reports/*.txt; do
    [ -f "$file" ] || continue
    printf -- '--- %s\n' "${file#"$target"/}"
    cat "$file"
done
if [ "$status" != 0 ]; then
    # The end of a long log is what a reader sees first: repeat there what
    # failed, what was still running, and what the engine complained about.
    say "what went wrong (the whole output is in $output)"
    grep -E '^test .* FAILED$|panicked at' -A3 "$output" | head -80 || true
    running=$(sed -n 's/^test \(.*\) has been running for over 60 seconds$/\1/p' "$output" | sort -u)
    for name in $running; do
        grep -qE "^test $name \.\.\. " "$output" || echo "still running when stopped: $name"
    done
    if [ -f /tmp/wasmdock-dockerd.log ]; then
        echo "--- the last errors in /tmp/wasmdock-dockerd.log"
        grep 'level=error' /tmp/wasmdock-dockerd.log | tail -15 | cut -c1-300 || true
    fi
fi
if [ "$status" = 124 ] || [ "$status" = 137 ]; then
    die "the tests did not finish within 70 minutes: one hangs (\"still running when stopped\" above names it)"
fi
exit "$status"
