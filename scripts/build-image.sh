#!/usr/bin/env bash
# Builds the certcast container image from deploy/Dockerfile with Debian's podman, without any
# container registry: the `debian:bookworm` and `debian:bookworm-slim` base images are made with
# mmdebstrap from the Debian archive (once per machine; podman keeps them) and tagged with the
# names the Dockerfile uses. Runs as root (podman with --runtime=runc: crun fails on this kind of
# machine's cgroup layout).
#
# Usage: scripts/build-image.sh [--tag=NAME] [--prebuilt=BUILD_DIR]
#   --tag=NAME            image name (default certcast:0.1.0, the name the manifests use)
#   --prebuilt=BUILD_DIR  take certcast-server and certcast-client from a build on this machine
#                         (Debian 12 as well) instead of compiling them in the image's build
#                         stage; the runtime stage is the same. The test suite uses this, since
#                         compiling in the image repeats the whole build without ccache.
# Prints the image size at the end.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TAG=certcast:0.1.0
PREBUILT=""
for arg in "$@"; do
  case "$arg" in
    --tag=*) TAG=${arg#--tag=} ;;
    --prebuilt=*) PREBUILT=${arg#--prebuilt=} ;;
    *) echo "usage: $0 [--tag=NAME] [--prebuilt=BUILD_DIR]" >&2; exit 2 ;;
  esac
done

log() { echo "build-image: $*"; }
die() { echo "build-image: ERROR: $*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "run as root (podman builds and runs the image as root here)"
for tool in podman mmdebstrap runc; do
  command -v "$tool" >/dev/null || die "$tool not found: run scripts/install-deps.sh"
done

# The limits podman would otherwise ask for are refused here; stay within the shell's hard limits.
PODMAN_LIMITS=(--ulimit "nofile=$(ulimit -Hn):$(ulimit -Hn)" --ulimit "nproc=4096:4096")

# ensure_base NAME SLIM: makes docker.io/library/debian:NAME unless podman already has it.
ensure_base() {
  local name=$1 slim=$2 image="docker.io/library/debian:$1" work
  if podman image exists "$image"; then
    log "base image $image present"
    return
  fi
  log "making $image with mmdebstrap (once per machine, about 2 minutes)"
  work=$(mktemp -d)
  local options=(--variant=minbase --format=tar)
  if [[ $slim == 1 ]]; then
    # What Debian's official -slim images leave out: documentation, manuals, translations.
    options+=(
      --dpkgopt='path-exclude=/usr/share/doc/*'
      --dpkgopt='path-include=/usr/share/doc/*/copyright'
      --dpkgopt='path-exclude=/usr/share/man/*'
      --dpkgopt='path-exclude=/usr/share/info/*'
      --dpkgopt='path-exclude=/usr/share/locale/*'
      --dpkgopt='path-exclude=/usr/share/lintian/*'
    )
  fi
  mmdebstrap "${options[@]}" bookworm "$work/rootfs.tar" >"$work/mmdebstrap.log" 2>&1 \
    || { tail -20 "$work/mmdebstrap.log" >&2; rm -rf "$work"; die "mmdebstrap failed for $image"; }
  podman import --change 'CMD ["bash"]' "$work/rootfs.tar" "$image" >/dev/null
  rm -rf "$work"
}

ensure_base bookworm-slim 1
build_args=()
if [[ -n $PREBUILT ]]; then
  # The prebuilt context holds only the two stripped binaries, under out/.
  context=$(mktemp -d)
  trap 'rm -rf "$context"' EXIT
  mkdir "$context/out"
  for binary in server/certcast-server client/certcast-client; do
    [[ -x $PREBUILT/$binary ]] || die "$PREBUILT/$binary not found: build it first"
    install -m 0755 "$PREBUILT/$binary" "$context/out/"
    strip --strip-unneeded "$context/out/${binary#*/}"
  done
  build_args=(--build-arg BINARIES=prebuilt)
else
  ensure_base bookworm 0
  context=$ROOT
fi

log "building $TAG${PREBUILT:+ (binaries from $PREBUILT)}"
start=$SECONDS
podman build --runtime=runc --pull=never --network=host "${PODMAN_LIMITS[@]}" \
  "${build_args[@]}" -f "$ROOT/deploy/Dockerfile" -t "$TAG" "$context"
log "built $TAG in $((SECONDS - start)) s, size $(podman image inspect --format '{{.Size}}' "$TAG" \
  | awk '{printf "%.1f MB", $1 / 1e6}')"
