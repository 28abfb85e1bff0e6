# Shared set-up for scripts/demo.sh and scripts/test.sh (sourced, not run).
# Installs what a fresh Debian/Ubuntu machine lacks when run as root, and
# says exactly what to do otherwise.

set -euo pipefail

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

need_root_for() {
    [ "$(id -u)" = 0 ] || die "$1 is missing; run this script as root (it installs Debian packages), or install it yourself"
}

# Debian packages: docker.io (engine), busybox-static (test images built
# without a registry), docker-registry (a registry on loopback), gcc/make,
# and Go with hashicorp/go-plugin for the interoperability test.
ensure_packages() {
    local missing=()
    command -v dockerd >/dev/null || missing+=(docker.io)
    [ -x /bin/busybox ] || missing+=(busybox-static)
    command -v docker-registry >/dev/null || missing+=(docker-registry)
    command -v cc >/dev/null || missing+=(gcc)
    command -v make >/dev/null || missing+=(make)
    command -v curl >/dev/null || missing+=(curl)
    command -v go >/dev/null || missing+=(golang-go)
    [ -d /usr/share/gocode/src/github.com/hashicorp/go-plugin ] || missing+=(golang-github-hashicorp-go-plugin-dev)
    [ -d /usr/share/gocode/src/google.golang.org/grpc ] || missing+=(golang-google-grpc-dev)
    [ ${#missing[@]} -eq 0 ] && return 0
    need_root_for "${missing[*]}"
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
}

ensure_rust() {
    command -v cargo >/dev/null || die "Rust is not installed: install rustup (https://rustup.rs), then run this again; rust-toolchain.toml selects the toolchain"
    if command -v rustup >/dev/null; then
        # rust-toolchain.toml names the toolchain; make sure it has the guest target.
        rustup target add wasm32-wasip2 >/dev/null 2>&1 || die "cannot add the wasm32-wasip2 target (rustup target add wasm32-wasip2)"
    fi
}

# Disk for the build: a full test build (debug, every test binary, the
# guests) takes about 6 GiB without incremental data. CI builds once, so it
# keeps no incremental data at all.
ensure_disk() {
    if [ "${CI:-}" = true ]; then export CARGO_INCREMENTAL=0; fi
    local target=${CARGO_TARGET_DIR:-$ROOT/target}
    local probe=$target
    [ -d "$probe" ] || probe=$ROOT
    local free_kib
    free_kib=$(df -Pk "$probe" | awk 'NR == 2 { print $4 }')
    local free_gib=$((free_kib / 1024 / 1024))
    say "disk: ${free_gib} GiB free for $target"
    if [ "$free_kib" -lt $((3 * 1024 * 1024)) ]; then
        die "only ${free_gib} GiB free where the build goes ($target); the tests need about 6 GiB: free some space (cargo clean in other checkouts, docker system prune) or set CARGO_TARGET_DIR to a roomier disk"
    fi
    if [ "$free_kib" -lt $((7 * 1024 * 1024)) ]; then
        say "warning: ${free_gib} GiB free; a full test build needs about 6 GiB and may run out"
    fi
}

# A Docker engine: use the one that answers, else start dockerd (root only),
# with a runtime named `nvidia` that is plain runc, so GPU runtime selection
# can be exercised on machines without GPUs.
ensure_docker() {
    if docker info >/dev/null 2>&1; then return 0; fi
    need_root_for "a running Docker engine"
    local runc
    runc=$(command -v runc || echo /usr/sbin/runc)
    say "starting dockerd (log: /tmp/wasmdock-dockerd.log)"
    nohup dockerd --add-runtime "nvidia=$runc" >/tmp/wasmdock-dockerd.log 2>&1 &
    for _ in $(seq 1 60); do
        docker info >/dev/null 2>&1 && return 0
        sleep 1
    done
    tail -20 /tmp/wasmdock-dockerd.log >&2 || true
    die "dockerd did not come up within 60 s (see /tmp/wasmdock-dockerd.log)"
}

# `-p NAME` for every guest crate: the examples and the host's test guests.
# Directory names are package names.
guest_package_args() {
    local dir
    for dir in examples/guests/*/ tests/guests/*/; do
        if [ -f "$dir/Cargo.toml" ]; then
            printf -- '-p\n%s\n' "$(basename "$dir")"
        fi
    done
}

# Builds every guest (libraries and the `not-a-policy` command alike) into
# target/wasm32-wasip2/guest/*.wasm.
build_guests() {
    say "building guests (examples/guests, tests/guests) for wasm32-wasip2"
    local packages
    mapfile -t packages < <(guest_package_args)
    cargo build --target wasm32-wasip2 --profile guest "${packages[@]}" "$@"
}

# The demo image: Debian's busybox-static with every applet on PATH, made
# with `docker import` (no registry needed). Built once.
DEMO_IMAGE=wasmdock-demo:1
build_demo_image() {
    if docker image inspect "$DEMO_IMAGE" >/dev/null 2>&1; then return 0; fi
    say "building the demo image $DEMO_IMAGE from /bin/busybox (docker import, no registry)"
    local root applet
    root=$(mktemp -d)
    mkdir -p "$root/bin" "$root/tmp"
    cp /bin/busybox "$root/bin/busybox"
    for applet in $("$root/bin/busybox" --list); do
        [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
    done
    tar -C "$root" -c . | docker import -c 'ENV PATH=/bin' -c 'CMD ["/bin/sh"]' \
        -m "wasmdock demo image (busybox-static)" - "$DEMO_IMAGE" >/dev/null
    rm -rf "$root"
}
