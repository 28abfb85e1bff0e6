# Developer shortcuts. The README's two commands are scripts/demo.sh and
# scripts/test.sh; these targets run the same steps piecemeal.

.PHONY: all build fmt lint test build-guests bench demo clean

all: build

build:
	cargo build --workspace

fmt:
	cargo fmt --all

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

build-guests:
	bash -c 'source scripts/lib.sh && build_guests'

test:
	bash scripts/test.sh

# Benchmarks measure against baselines (docker logs -f, docker stats,
# docker run -d) and write BENCHMARKS.md; none exist yet.
bench:
	@echo "no benchmarks yet: they arrive with the task lifecycle" >&2; exit 1

demo:
	bash scripts/demo.sh

clean:
	cargo clean
