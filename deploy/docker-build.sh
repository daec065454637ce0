#!/usr/bin/env bash
# Offline image build: needs no container registry, only the Debian archive
# (once, for the base image) and whatever cargo needs (crates.io, or a warm
# cargo cache).
#
#   1. make the local base image with deploy/base-image.sh (skipped when it exists)
#   2. cargo build --release the two binaries on the host (honours CARGO_TARGET_DIR,
#      CARGO_BUILD_TARGET and .cargo/config target-dir)
#   3. stage byzmtl-node and byzmtl in a temporary build context
#   4. docker build --pull=false --network=none with deploy/Dockerfile.prebuilt
#   5. smoke-test the image (non-root user, both binaries' libraries resolve),
#      and only then tag it: a failed run leaves the previous image in place
#
# Usage: deploy/docker-build.sh [--no-cargo] [--bin-dir DIR] [--strip]
#   --no-cargo     skip step 2 and package the binaries already in the target dir
#   --bin-dir DIR  skip step 2 and package the binaries in DIR (for instance the debug
#                  binaries of `cargo test`); cargo is then not needed at all
#   --strip        strip debug info from the staged copies (the originals are untouched)
#
# Environment:
#   BYZMTL_IMAGE       tag to build            (default: byzmtl:latest)
#   BYZMTL_BASE_IMAGE  base image tag          (default: byzmtl-base:bookworm-slim)
#   CARGO_FLAGS        cargo build flags, replacing the default --locked
#   DOCKER_BUILDKIT    left alone if set; otherwise 0 when the buildx plugin is missing
#
# Idempotent: a second run with unchanged sources is a cargo no-op and a fully
# cached docker build (a few seconds).
set -euo pipefail

die() { printf 'docker-build.sh: error: %s\n' "$*" >&2; exit 1; }
log() { printf 'docker-build.sh: %s\n' "$*" >&2; }

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
IMAGE="${BYZMTL_IMAGE:-byzmtl:latest}"
export BYZMTL_BASE_IMAGE="${BYZMTL_BASE_IMAGE:-byzmtl-base:bookworm-slim}"
CARGO_FLAGS="${CARGO_FLAGS---locked}"
BINS=(byzmtl-node byzmtl)
RUN_CARGO=1
STRIP=0
BIN_DIR=""

while [ $# -gt 0 ]; do
    case "$1" in
        --no-cargo) RUN_CARGO=0 ;;
        --bin-dir)
            [ $# -ge 2 ] || die "--bin-dir needs a folder"
            BIN_DIR="$2"; RUN_CARGO=0; shift ;;
        --strip) STRIP=1 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $1 (try --help)" ;;
    esac
    shift
done

command -v docker >/dev/null 2>&1 || die "docker CLI not found"
if [ -z "$BIN_DIR" ]; then
    command -v cargo >/dev/null 2>&1 || die "cargo not found (install a Rust toolchain, or put cargo on PATH)"
    [ -f "$REPO_ROOT/Cargo.toml" ] || die "no Cargo.toml in $REPO_ROOT"
fi
[ -f "$SCRIPT_DIR/Dockerfile.prebuilt" ] || die "missing $SCRIPT_DIR/Dockerfile.prebuilt"
if [ "$STRIP" = 1 ]; then command -v strip >/dev/null 2>&1 || die "--strip needs strip (binutils)"; fi

# Without the buildx plugin, recent CLIs fall back to the legacy builder with a
# warning, and fail outright if DOCKER_BUILDKIT=1: pick the legacy builder quietly.
if [ -z "${DOCKER_BUILDKIT:-}" ] && ! docker buildx version >/dev/null 2>&1; then
    export DOCKER_BUILDKIT=0
fi

t0=$(date +%s)

# 1. Base image (a no-op when it already exists).
"$SCRIPT_DIR/base-image.sh"
t1=$(date +%s)

# 2. Binaries.
cd "$REPO_ROOT"
if [ "$RUN_CARGO" = 1 ]; then
    log "cargo build --release $CARGO_FLAGS${CARGO_TARGET_DIR:+ (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)}"
    # shellcheck disable=SC2086  # CARGO_FLAGS is a word list on purpose
    cargo build --release $CARGO_FLAGS --bin byzmtl-node --bin byzmtl \
        || die "cargo build --release failed (output above)"
fi
t2=$(date +%s)

# The target directory as cargo resolves it (CARGO_TARGET_DIR, config, default),
# unless --bin-dir named the folder.
if [ -z "$BIN_DIR" ]; then
    TARGET_DIR="$(cargo metadata --format-version 1 --no-deps --offline 2>/dev/null \
        | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
    [ -n "$TARGET_DIR" ] || die "could not find the cargo target directory (cargo metadata failed)"
    BIN_DIR="$TARGET_DIR/${CARGO_BUILD_TARGET:+$CARGO_BUILD_TARGET/}release"
fi
for b in "${BINS[@]}"; do
    if [ ! -f "$BIN_DIR/$b" ] || [ ! -x "$BIN_DIR/$b" ]; then
        die "$BIN_DIR/$b not found (build it, pass --bin-dir, or check CARGO_TARGET_DIR)"
    fi
done

# 3. Stage a minimal build context.
CONTEXT="$(mktemp -d "${TMPDIR:-/tmp}/byzmtl-image.XXXXXX")"
# Build under a temporary tag; $IMAGE moves only once the smoke test passes.
CANDIDATE="byzmtl-build-candidate:$$"
trap 'rm -rf "$CONTEXT" "$CONTEXT.log"; docker rmi "$CANDIDATE" >/dev/null 2>&1 || true' EXIT
for b in "${BINS[@]}"; do
    install -m 0755 "$BIN_DIR/$b" "$CONTEXT/$b"
    if [ "$STRIP" = 1 ]; then strip --strip-debug "$CONTEXT/$b"; fi
done
cp "$SCRIPT_DIR/Dockerfile.prebuilt" "$CONTEXT/Dockerfile"

VERSION="$(sed -n 's/^version[[:space:]]*=[[:space:]]*"\([^"]*\)".*/\1/p' Cargo.toml | head -n 1)"
REVISION="$(git -C "$REPO_ROOT" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
if [ "$REVISION" != unknown ] && ! git -C "$REPO_ROOT" diff --quiet HEAD -- 2>/dev/null; then
    REVISION="$REVISION-dirty"
fi

# 4. Build. --pull=false: FROM must resolve locally; --network=none: no RUN step
# can reach anything (the Dockerfile needs no network on a base with ca-certificates).
log "docker build $IMAGE from $BYZMTL_BASE_IMAGE (version ${VERSION:-unknown}, revision $REVISION)"
docker build --pull=false --network=none --force-rm \
    --build-arg BASE_IMAGE="$BYZMTL_BASE_IMAGE" \
    --build-arg VERSION="${VERSION:-unknown}" \
    --build-arg REVISION="$REVISION" \
    -t "$CANDIDATE" "$CONTEXT" >"$CONTEXT.log" 2>&1 \
    || { cat "$CONTEXT.log" >&2; rm -f "$CONTEXT.log"; die "docker build failed (output above)"; }
rm -f "$CONTEXT.log"
t3=$(date +%s)

# 5. Smoke test: runs as non-root, and every shared library of both binaries
# resolves inside the image (catches a host glibc newer than bookworm's).
CHECK="$(docker run --rm --network none --entrypoint /bin/sh "$CANDIDATE" -c \
    'id -u; for b in /usr/local/bin/byzmtl-node /usr/local/bin/byzmtl; do ldd "$b" 2>&1 || true; done')" \
    || die "could not run the new image: $CHECK"
[ "$(printf '%s\n' "$CHECK" | head -n 1)" != 0 ] || die "the new image runs as root"
if printf '%s\n' "$CHECK" | grep -q 'not found'; then
    printf '%s\n' "$CHECK" >&2
    die "a binary needs libraries (or a glibc version) that $BYZMTL_BASE_IMAGE lacks (ldd output above); $IMAGE left unchanged"
fi
docker tag "$CANDIDATE" "$IMAGE"

SIZE="$(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{ printf "%.1f MB", $1 / 1e6 }')"
log "built $IMAGE ($SIZE) in $((t3 - t0))s: base $((t1 - t0))s, cargo $((t2 - t1))s, docker build $((t3 - t2))s"
