#!/usr/bin/env bash
# Builds a local stand-in for deploy/Dockerfile's base image (node:20-bookworm-slim), for machines that
# cannot pull it: Debian bookworm (debootstrap --variant=minbase, from Debian's packages) plus the Node.js 20
# of this machine, laid out as the official image has it (/usr/local/bin/node, /usr/local/include/node for
# node-gyp, npm, and the user "node" with uid and gid 1000). Usage: stand-in-base.sh [NAME:TAG]
# The bookworm root file system is kept as a tarball under /var/cache/socksgate (when /var/cache exists),
# so later runs only add Node and import; without the cache it is made anew.
set -euo pipefail
name="${1:-docker.io/library/node:20-bookworm-slim}"
podman=(podman --runtime runc --cgroup-manager=cgroupfs)

for tool in podman runc debootstrap; do
  command -v "$tool" >/dev/null || { echo "stand-in-base: $tool is missing: apt-get install -y podman runc debootstrap" >&2; exit 1; }
done
node_bin="$(command -v node)"
node_version="$("$node_bin" --version)"
case "$node_version" in v20.*) ;; *) echo "stand-in-base: needs Node.js 20 on this machine, found $node_version" >&2; exit 1 ;; esac
node_prefix="$(dirname "$(dirname "$(readlink -f "$node_bin")")")"
[ -f "$node_prefix/include/node/node_api.h" ] || { echo "stand-in-base: no Node.js headers under $node_prefix/include/node" >&2; exit 1; }
npm_dir="$node_prefix/lib/node_modules/npm"
[ -f "$npm_dir/bin/npm-cli.js" ] || { echo "stand-in-base: no npm under $npm_dir" >&2; exit 1; }

# Already there for this Node.js and this script: nothing to do.
key="$node_version $(sha256sum "$0" | cut -c1-16)"
if [ "$("${podman[@]}" image inspect --format '{{index .Config.Labels "stand-in.key"}}' "$name" 2>/dev/null || true)" = "$key" ]; then
  echo "stand-in-base: $name is there (Node.js $node_version)"
  exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cache_dir=""
[ -d /var/cache ] && cache_dir=/var/cache/socksgate && mkdir -p "$cache_dir"
cached="${cache_dir:+$cache_dir/bookworm-minbase.tar}"
rootfs="$work/rootfs"
mkdir -p "$rootfs"
if [ -n "$cached" ] && [ -s "$cached" ]; then
  tar -C "$rootfs" -xf "$cached"
else
  echo "stand-in-base: debootstrap --variant=minbase bookworm (a few minutes)" >&2
  debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 || {
    tail -n 20 "$work/debootstrap.log" >&2; exit 1; }
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  if [ -n "$cached" ]; then tar -C "$rootfs" -cf "$cached.tmp" . && mv "$cached.tmp" "$cached"; fi
fi

# Node.js as the official image lays it out.
install -D -m 0755 "$(readlink -f "$node_bin")" "$rootfs/usr/local/bin/node"
mkdir -p "$rootfs/usr/local/include" "$rootfs/usr/local/lib/node_modules"
cp -a "$node_prefix/include/node" "$rootfs/usr/local/include/node"
cp -a "$npm_dir" "$rootfs/usr/local/lib/node_modules/npm"
ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$rootfs/usr/local/bin/npm"
ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$rootfs/usr/local/bin/npx"
# This machine's trust store, so npm in an image build trusts the registry as this machine does.
ca_env=()
if [ -s /etc/ssl/certs/ca-certificates.crt ]; then
  install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
  ca_env=(--change 'ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt')
fi
chroot "$rootfs" /usr/sbin/groupadd --gid 1000 node
chroot "$rootfs" /usr/sbin/useradd --uid 1000 --gid node --shell /bin/bash --create-home node

tar -C "$rootfs" -c . | "${podman[@]}" import --quiet \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change "ENV NODE_VERSION=${node_version#v}" \
  --change 'CMD ["node"]' \
  "${ca_env[@]}" \
  --change "LABEL stand-in.key=$key" \
  - "$name" >/dev/null
echo "stand-in-base: imported $name (Debian bookworm minbase, Node.js $node_version)"
