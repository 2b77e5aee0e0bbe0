#!/usr/bin/env bash
# The README's two commands on a brand-new Debian 12: builds a minimal root with debootstrap (the
# minbase variant plus make, git and ca-certificates, nothing else), clones this repository's HEAD
# into it and runs `make test` then `make demo` there, as root, the way a newcomer would.
# Needs root and debootstrap (installed if missing); network access to a Debian mirror and PyPI.
# Usage: sudo bash scripts/fresh_debian_test.sh [ROOT_DIR] (default /tmp/fresh-debian12); log: ROOT_DIR.log
#
# Sandbox plumbing, not project set-up: when this machine reaches the network through a TLS proxy
# with its own CA (/usr/local/share/ca-certificates), that CA and apt's snapshot settings are copied
# into the root, and PIP_CERT points pip at the system bundle, so the fresh root can reach the same
# registries this machine does.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
ROOT_DIR=${1:-/tmp/fresh-debian12}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
command -v debootstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null; }
cleanup() {
  for m in dev/pts dev proc sys/fs/cgroup sys; do umount -R -l "$ROOT_DIR/$m" 2>/dev/null || true; done
}
trap cleanup EXIT
if [ ! -x "$ROOT_DIR/usr/bin/git" ]; then
  rm -rf "$ROOT_DIR"
  echo "[fresh] debootstrap bookworm (minbase + make, git, ca-certificates) into $ROOT_DIR"
  debootstrap --variant=minbase --include=make,git,ca-certificates bookworm "$ROOT_DIR" "$MIRROR" > "$ROOT_DIR.debootstrap.log" 2>&1
else
  # (quicker, but an earlier run's apt packages are there already: remove ROOT_DIR for a brand-new root)
  echo "[fresh] NOTE: reusing the Debian root of an earlier run in $ROOT_DIR: not a brand-new machine; remove it for one"
fi
# The host's network trust (see above).
if ls /usr/local/share/ca-certificates/*.crt >/dev/null 2>&1; then
  cp /usr/local/share/ca-certificates/*.crt "$ROOT_DIR/usr/local/share/ca-certificates/"
  chroot "$ROOT_DIR" update-ca-certificates >/dev/null 2>&1
fi
for f in /etc/apt/apt.conf.d/99artifact-registry; do [ -f "$f" ] && cp "$f" "$ROOT_DIR/etc/apt/apt.conf.d/"; done
cp /etc/resolv.conf "$ROOT_DIR/etc/resolv.conf"
mount -t proc proc "$ROOT_DIR/proc"
mount -t sysfs sys "$ROOT_DIR/sys"
# The host's cgroup filesystem, as a machine has it (slurmd, in the Slurm test, needs it).
if grep -q " /sys/fs/cgroup " /proc/mounts; then mount --rbind /sys/fs/cgroup "$ROOT_DIR/sys/fs/cgroup"; fi
mount --bind /dev "$ROOT_DIR/dev"
mount --bind /dev/pts "$ROOT_DIR/dev/pts"
rm -rf "$ROOT_DIR/root/streamrecon"
git clone -q "$REPO" "$ROOT_DIR/root/streamrecon"
echo "[fresh] in the new root: python3 is $(chroot "$ROOT_DIR" sh -c 'command -v python3 || echo absent'), make is $(chroot "$ROOT_DIR" sh -c 'command -v make')"
start=$(date +%s)
chroot "$ROOT_DIR" /usr/bin/env -i HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  PIP_CERT=/etc/ssl/certs/ca-certificates.crt CI=true \
  /bin/bash -c 'cd /root/streamrecon && make test && make demo'
echo "[fresh] make test + make demo passed in the Debian 12 root (brand-new unless a NOTE above says otherwise) in $(( $(date +%s) - start )) s"
