#!/usr/bin/env bash
# Builds the image of deploy/Dockerfile as localhost/socksgate:test for the image and Kubernetes tests:
# the stand-in base first where needed (stand-in-base.sh), then the build with Debian's podman (runc,
# cgroupfs, explicit ulimits, host network for the build's apt-get and npm ci). npm runs it before the
# suite (pretest), so the tests find it built and only check it is current. One build at a time.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
for tool in podman runc debootstrap flock; do
  if ! command -v "$tool" >/dev/null; then
    echo "build-image: $tool is missing (apt-get install -y podman runc debootstrap util-linux); the image and Kubernetes tests will fail" >&2
    exit 0
  fi
done
exec 9>"${TMPDIR:-/tmp}/socksgate-image-build.lock"
flock 9
bash "$root/test/deploy/stand-in-base.sh"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
if ! podman --runtime runc --cgroup-manager=cgroupfs build --format docker --network host \
  --ulimit nofile=4096:4096 --ulimit nproc=1000:1000 \
  -t localhost/socksgate:test -f "$root/deploy/Dockerfile" "$root" >"$log" 2>&1; then
  cat "$log" >&2
  echo "build-image: the build of deploy/Dockerfile failed" >&2
  exit 1
fi
echo "build-image: localhost/socksgate:test is built from this tree" >&2
