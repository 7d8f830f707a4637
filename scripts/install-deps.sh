#!/usr/bin/env bash
# Installs what certcast needs to build, test and run its demo on Debian 12 (bookworm).
# Idempotent: installs only missing apt packages (apt-get update runs only then) and fetches
# buf into $ROOT/.tools only when it is not there yet. Runs as root, or through sudo.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUF_VERSION=1.75.0
BUF="$ROOT/.tools/node_modules/.bin/buf"

PACKAGES=(
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler libspdlog-dev
  libfmt-dev libabsl-dev libssl-dev libgtest-dev libgmock-dev pkg-config grpc-proto cmake g++
  libcurl4-openssl-dev nlohmann-json3-dev make openssl nodejs npm ca-certificates procps curl
  python3 python3-yaml libyaml-cpp-dev prometheus prometheus-cpp-dev
  # The static certcast-client (CERTCAST_STATIC_CLIENT) links these packages' archives:
  # libgrpc.a libgpr.a libupb.a libaddress_sorting.a, libcares.a, libre2.a, libz.a (and
  # libgrpc++.a, libprotobuf.a, libabsl_*.a, libssl.a, libcrypto.a from the packages above).
  libgrpc-dev libc-ares-dev libre2-dev zlib1g-dev
  # bench/run compares with etcd; its v3 API protos (protos/etcd) follow etcd's own.
  etcd-server golang-etcd-server-dev
  # libFuzzer targets (scripts/fuzz.sh): clang 14 with its fuzzer and sanitizer runtimes.
  clang libclang-rt-14-dev
  # The container image test (tests/image, scripts/build-image.sh): podman with runc, and
  # mmdebstrap to make the Debian base image without a container registry.
  podman runc mmdebstrap
)

log() { echo "install-deps: $*"; }
die() { echo "install-deps: ERROR: $*" >&2; exit 1; }

installed() {
  # dpkg -s also succeeds for packages that were removed but not purged; check the status line.
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'
}

command -v dpkg-query >/dev/null || die "dpkg-query not found: this script expects Debian 12"

present() {
  installed "$1" && return 0
  # Node.js from another source (e.g. NodeSource's nodejs, which bundles npm and conflicts with
  # Debian's npm package) is fine as long as the commands exist.
  case "$1" in
    nodejs) command -v node >/dev/null ;;
    npm) command -v npm >/dev/null ;;
    *) return 1 ;;
  esac
}

missing=()
for package in "${PACKAGES[@]}"; do
  present "$package" || missing+=("$package")
done

if ((${#missing[@]} > 0)); then
  if [[ $(id -u) -eq 0 ]]; then
    SUDO=()
  elif command -v sudo >/dev/null; then
    SUDO=(sudo)
  else
    die "missing packages (${missing[*]}) and not running as root, and sudo is not installed." \
        "Run this script as root, or install them: apt-get install ${missing[*]}"
  fi
  log "installing ${missing[*]}"
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    "${missing[@]}"
else
  log "all ${#PACKAGES[@]} apt packages present"
fi

# buf (its `buf curl` speaks gRPC with server reflection, like grpcurl) from npm, locally.
if [[ ! -x "$BUF" ]]; then
  log "installing @bufbuild/buf@$BUF_VERSION into $ROOT/.tools"
  mkdir -p "$ROOT/.tools"
  npm install --no-audit --no-fund --prefix "$ROOT/.tools" "@bufbuild/buf@$BUF_VERSION"
fi
# npm 11 may skip buf's postinstall; the launcher then still has to find its platform binary.
if ! version=$("$BUF" --version 2>&1); then
  die "$BUF does not run ($version). Remove $ROOT/.tools and run this script again."
fi
log "buf $version at $BUF"
