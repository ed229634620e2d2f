#!/usr/bin/env bash
# Builds etcd, kube-apiserver and kube-controller-manager from the Go module in tests/k8s (versions pinned in its
# go.mod) into a machine-wide cache outside the checkout, keyed by those versions, so fresh clones reuse them.
# Idempotent: prints the folder and returns at once when the binaries are already there.
#   LENSING_K8S_CACHE  cache root (default /var/cache/lensing-metrics/k8s, or ~/.cache/... when that is not writable)
#   --check            print the folder when the binaries are there, else exit 1 without building (the test fixture)
set -euo pipefail
cd "$(dirname "$0")/../tests/k8s"
log() { printf 'build-k8s: %s\n' "$*" >&2; }

k8s_version=$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ {print $2; exit}' go.mod)
etcd_version=$(awk '$1 == "go.etcd.io/etcd/server/v3" && $2 ~ /^v/ {print $2; exit}' go.mod)
go_version=$(go env GOVERSION)
default_root=/var/cache/lensing-metrics/k8s
if ! mkdir -p "$default_root" 2>/dev/null || [ ! -w "$default_root" ]; then
  default_root="${XDG_CACHE_HOME:-$HOME/.cache}/lensing-metrics/k8s"
fi
root="${LENSING_K8S_CACHE:-$default_root}"
key="kubernetes-${k8s_version}_etcd-${etcd_version}_${go_version}"
out="$root/$key"
binaries=(etcd kube-apiserver kube-controller-manager)

built() {
  for b in "${binaries[@]}"; do [ -x "$out/bin/$b" ] || return 1; done
}
reuse() {
  log "reusing $out/bin (kubernetes $k8s_version, etcd $etcd_version)"
  echo "$out/bin"
  exit 0
}
if [ "${1:-}" = --check ]; then
  built || { log "not built yet: $out/bin (run scripts/build-k8s.sh or make tools)"; exit 1; }
  echo "$out/bin"
  exit 0
fi
built && reuse

mkdir -p "$root"
exec 9>"$root/.lock"
flock 9
built && reuse  # another run built it while this one waited for the lock
tmp="$out.tmp.$$"
rm -rf "$tmp" && mkdir -p "$tmp/bin"
log "building kubernetes $k8s_version and etcd $etcd_version with $go_version into $out (cold: tens of minutes on 2 cores)"
start=$(date +%s)
ldflags="-s -w"
for var in gitVersion=$k8s_version gitMajor=$(echo "$k8s_version" | cut -d. -f1 | tr -d v) \
           gitMinor=$(echo "$k8s_version" | cut -d. -f2) gitTreeState=clean buildDate=1970-01-01T00:00:00Z; do
  ldflags="$ldflags -X k8s.io/component-base/version.$var"
done
for b in "${binaries[@]}"; do
  log "go build $b"
  CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$tmp/bin/$b" "./cmd/$b"
done
rm -rf "$out" && mv "$tmp" "$out"
log "cold build took $(( $(date +%s) - start )) s"
echo "$out/bin"
