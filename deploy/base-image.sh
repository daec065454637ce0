#!/usr/bin/env bash
# Build a local, minimal Debian bookworm base image from Debian packages only
# (debootstrap + `docker import`), for machines that cannot pull from any
# container registry. The image plays the role of debian:bookworm-slim for
# deploy/Dockerfile.prebuilt (and deploy/Dockerfile) through the BASE_IMAGE
# build argument.
#
# Usage: deploy/base-image.sh [--force]
#
# Environment:
#   BYZMTL_BASE_IMAGE       tag to create   (default: byzmtl-base:bookworm-slim)
#   DEBIAN_MIRROR           Debian archive URL (default: the host's apt source
#                           for the suite, else debootstrap's own default)
#   DEBIAN_SECURITY_MIRROR  security archive URL (default: the host's apt source
#                           for <suite>-security; if none, no security upgrade)
#   BASE_UPGRADE=0          skip the apt-get upgrade from -updates/-security
#
# Needs root (debootstrap, chroot) and a running Docker daemon. The only network
# it uses is the Debian archive. If the tag already exists it does nothing
# unless --force is given.
set -euo pipefail

SUITE=bookworm
TAG="${BYZMTL_BASE_IMAGE:-byzmtl-base:bookworm-slim}"
FORCE=0

die() { printf 'base-image.sh: error: %s\n' "$*" >&2; exit 1; }
log() { printf 'base-image.sh: %s\n' "$*" >&2; }

while [ $# -gt 0 ]; do
    case "$1" in
        -f|--force) FORCE=1 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $1 (try --help)" ;;
    esac
    shift
done

command -v docker >/dev/null 2>&1 || die "docker CLI not found"
docker info >/dev/null 2>&1 || die "cannot talk to the Docker daemon (is it running, and may this user use it?)"

if [ "$FORCE" = 0 ] && docker image inspect "$TAG" >/dev/null 2>&1; then
    log "$TAG already exists; nothing to do (use --force to rebuild)"
    exit 0
fi

[ "$(id -u)" = 0 ] || die "must run as root (debootstrap and chroot need it)"

# First URI of an enabled 'deb' source on the host whose suites include $1,
# from deb822 (*.sources) or one-line (*.list) apt sources; empty if none.
host_apt_uri() {
    local suite="$1" f uri=""
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -r "$f" ] || continue
        uri="$(awk -v suite="$suite" '
            BEGIN { RS = ""; FS = "\n" }
            {
                types = ""; uris = ""; suites = ""; enabled = "yes"
                for (i = 1; i <= NF; i++) {
                    line = $i
                    if (line ~ /^Types:/)   { sub(/^Types:[ \t]*/, "", line);   types  = " " line " " }
                    if (line ~ /^URIs:/)    { sub(/^URIs:[ \t]*/, "", line);    uris   = line }
                    if (line ~ /^Suites:/)  { sub(/^Suites:[ \t]*/, "", line);  suites = " " line " " }
                    if (line ~ /^Enabled:/) { sub(/^Enabled:[ \t]*/, "", line); enabled = line }
                }
                if (enabled != "no" && types ~ / deb / && index(suites, " " suite " ")) {
                    split(uris, u, /[ \t]+/); print u[1]; exit
                }
            }' "$f")"
        [ -n "$uri" ] && { printf '%s\n' "$uri"; return 0; }
    done
    cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | awk -v suite="$suite" '
        $1 == "deb" {
            i = 2
            if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
            if ($(i + 1) == suite) { print $i; exit }
        }'
}

MIRROR="${DEBIAN_MIRROR:-$(host_apt_uri "$SUITE")}"
SECURITY_MIRROR="${DEBIAN_SECURITY_MIRROR:-$(host_apt_uri "$SUITE-security")}"

if ! command -v debootstrap >/dev/null 2>&1; then
    command -v apt-get >/dev/null 2>&1 || die "debootstrap is missing and there is no apt-get to install it"
    log "installing debootstrap from the Debian archive"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap debian-archive-keyring >/dev/null; then
        apt-get update -q >/dev/null || die "apt-get update failed"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap debian-archive-keyring >/dev/null \
            || die "could not install debootstrap"
    fi
fi

ARCH="$(dpkg --print-architecture 2>/dev/null || true)"
[ -n "$ARCH" ] || die "cannot tell the Debian architecture (dpkg --print-architecture)"

WORK="$(mktemp -d "${TMPDIR:-/var/tmp}/byzmtl-base.XXXXXX")"
ROOTFS="$WORK/rootfs"

# Unmount anything left mounted under the rootfs (deepest first), then delete it.
cleanup() {
    local mp
    if [ -d "$WORK" ]; then
        awk -v root="$ROOTFS" 'index($5, root) == 1 { print $5 }' /proc/self/mountinfo \
            | sort -r | while read -r mp; do umount -l "$mp" 2>/dev/null || true; done
        rm -rf --one-file-system "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start=$(date +%s)
log "debootstrap $SUITE ($ARCH, minbase) into $ROOTFS from ${MIRROR:-debootstrap default mirror}"
# minbase = Essential packages + apt; ca-certificates is the only addition.
# That is glibc, libgcc-s1 and a shell: what a dynamically linked Rust binary needs.
debootstrap --variant=minbase --arch="$ARCH" --include=ca-certificates \
    "$SUITE" "$ROOTFS" ${MIRROR:+"$MIRROR"} >"$WORK/debootstrap.log" 2>&1 \
    || { tail -n 30 "$WORK/debootstrap.log" >&2; die "debootstrap failed (log above)"; }

# Keep later package installs in derived images slim too (same rules as the
# official slim images), then drop what those rules exclude.
cat >"$ROOTFS/etc/dpkg/dpkg.cfg.d/docker-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/overrides/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/man/*
EOF
cat >"$ROOTFS/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
printf 'Acquire::Languages "none";\n' >"$ROOTFS/etc/apt/apt.conf.d/docker-no-languages"
printf 'APT::Install-Recommends "false";\n' >"$ROOTFS/etc/apt/apt.conf.d/docker-no-recommends"
# No service may start inside the image while packages are installed.
printf '#!/bin/sh\nexit 101\n' >"$ROOTFS/usr/sbin/policy-rc.d"
chmod 0755 "$ROOTFS/usr/sbin/policy-rc.d"

# apt sources of the image: what debootstrap wrote (the main suite), plus
# -updates and -security so that `apt-get upgrade` in a derived image works.
MAIN_URI="$(awk '$1 == "deb" { print $2; exit }' "$ROOTFS/etc/apt/sources.list")"
[ -n "$MAIN_URI" ] || die "no 'deb' line in the sources.list that debootstrap wrote"
{
    printf 'deb %s %s main\n' "$MAIN_URI" "$SUITE"
    printf 'deb %s %s-updates main\n' "$MAIN_URI" "$SUITE"
    if [ -n "$SECURITY_MIRROR" ]; then
        printf 'deb %s %s-security main\n' "$SECURITY_MIRROR" "$SUITE"
    fi
} >"$ROOTFS/etc/apt/sources.list"

if [ "${BASE_UPGRADE:-1}" != 0 ]; then
    [ -n "$SECURITY_MIRROR" ] \
        || log "warning: no $SUITE-security source found on the host; set DEBIAN_SECURITY_MIRROR to get security updates"
    log "applying $SUITE-updates/-security upgrades inside the rootfs"
    cp -L /etc/resolv.conf "$ROOTFS/etc/resolv.conf" 2>/dev/null || true
    mount -t proc proc "$ROOTFS/proc"
    if ! chroot "$ROOTFS" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
        sh -c 'apt-get update -q && apt-get -y -q -o Dpkg::Options::=--force-confold upgrade && apt-get clean' \
        >"$WORK/upgrade.log" 2>&1; then
        umount "$ROOTFS/proc" || true
        tail -n 30 "$WORK/upgrade.log" >&2
        die "apt-get upgrade inside the rootfs failed (log above; BASE_UPGRADE=0 skips this step)"
    fi
    umount "$ROOTFS/proc"
fi

# Slim down: docs (but copyright), man/info pages, locales, caches, logs, and
# host-specific files that Docker provides at run time.
find "$ROOTFS/usr/share/doc" -mindepth 1 -not -type d -not -name copyright -delete
find "$ROOTFS/usr/share/doc" -mindepth 1 -type d -empty -delete
R="${ROOTFS:?}"
rm -rf --one-file-system "$R"/usr/share/{man,info,groff,linda,lintian,locale}/*
rm -rf --one-file-system "$R"/var/lib/apt/lists/* "$R"/var/cache/apt/*.bin "$R"/var/cache/apt/archives/*.deb
rm -f "$R"/var/cache/debconf/*-old "$R"/var/lib/dpkg/*-old "$R"/var/cache/ldconfig/aux-cache
find "$R/var/log" -type f -delete
rm -rf --one-file-system "${R:?}"/tmp/* "${R:?}"/var/tmp/* "${R:?}"/dev/* "${R:?}"/proc/* "${R:?}"/sys/* "${R:?}"/run/*
rm -f "$R/etc/resolv.conf" "$R/etc/hostname"
if [ -e "$ROOTFS/etc/machine-id" ]; then : >"$ROOTFS/etc/machine-id"; fi

VERSION="$(cat "$ROOTFS/etc/debian_version" 2>/dev/null || echo "$SUITE")"
log "importing the rootfs as $TAG (Debian $VERSION)"
tar --numeric-owner --xattrs -C "$ROOTFS" -cf - . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]' \
    --change "LABEL org.opencontainers.image.title=byzmtl-base org.opencontainers.image.description=\"Debian $SUITE minbase + ca-certificates, built by deploy/base-image.sh\" org.opencontainers.image.version=$VERSION" \
    --message "debootstrap --variant=minbase $SUITE ($VERSION), deploy/base-image.sh" \
    - "$TAG" >/dev/null

# Smoke test: the image starts and its dynamic loader and shell work.
docker run --rm --network none "$TAG" /bin/sh -c 'ldconfig -p >/dev/null && test -s /etc/ssl/certs/ca-certificates.crt' \
    || die "the imported image $TAG failed its smoke test"

log "done in $(( $(date +%s) - start ))s: $TAG ($(docker image inspect -f '{{.Size}}' "$TAG" | awk '{ printf "%.1f MB", $1 / 1e6 }'))"
