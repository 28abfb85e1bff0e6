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

# Benchmarks measure against baselines in the same run (docker run -d,
# docker logs -f, docker stats, docker ps + inspect, docker version;
# pooling against on-demand instances, cached against cold loads) and each
# rewrites its own section of BENCHMARKS.md and its goals table. They need
# Docker and an otherwise idle machine (about 35 minutes on 2 cores), and
# never run in `make test`. The release plugin is built once, first.
BENCHES = policy startup tasks logs stats reconciler

bench:
	cargo build --release --locked -p wasmdock-host --bin nomad-driver-wasmdock
	set -e; for b in $(BENCHES); do cargo bench --locked -p wasmdock-e2e --bench $$b; done

demo:
	bash scripts/demo.sh

clean:
	cargo clean
