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

# Benchmarks measure against baselines (docker logs -f, docker stats;
# pooling against on-demand instances, cached against cold loads) and
# each rewrites its own section of BENCHMARKS.md; they need Docker and an
# otherwise idle machine, and never run in `make test`.
bench:
	cargo bench -p wasmdock-e2e --bench logs
	cargo bench -p wasmdock-e2e --bench stats
	cargo bench -p wasmdock-e2e --bench policy

demo:
	bash scripts/demo.sh

clean:
	cargo clean
