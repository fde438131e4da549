#!/usr/bin/env bash
# Validates the deployment files offline: the Helm chart (lint, then the rendered
# manifests against the Kubernetes 1.37 schemas, strictly), the compose stack (loaded by
# compose-go, as Docker Compose would), that both use the one port table, and the
# Prometheus alert rules (promtool) with their runbooks and the Grafana dashboards.
# The tools come from scripts/ci-services.sh tools.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
CACHE="${SOMAGENT_CACHE:-$HOME/.cache/somagent}"
export PATH="$CACHE/bin:$PATH"
SCHEMAS="${SOMAGENT_K8S_SCHEMAS:-$CACHE/k8s-schemas}"
rendered=$(mktemp -d)
trap 'rm -rf "$rendered"' EXIT

kubeconform_strict() {
  kubeconform -strict -summary -kubernetes-version 1.37.0 \
    -schema-location "$SCHEMAS/{{ .NormalizedKubernetesVersion }}-local{{ .StrictSuffix }}/{{ .ResourceKind }}{{ .KindSuffix }}.json" "$@"
}

helm lint --strict helm/somagent
helm template somagent helm/somagent >"$rendered/chart.yaml"
kubeconform_strict "$rendered/chart.yaml"

# The validation must be able to fail: a wrong type has to be refused.
helm template somagent helm/somagent --set services.gateway.replicas=two >"$rendered/bad.yaml"
if kubeconform_strict "$rendered/bad.yaml" >/dev/null 2>&1; then
  echo "kubeconform accepted replicas: two; the chart check is not working" >&2
  exit 1
fi

# Rebuilt when its source is newer than the cached binary (a fresh clone always is).
if [ ! -x "$CACHE/bin/compose-check" ] || [ scripts/ci/compose-check/main.go -nt "$CACHE/bin/compose-check" ]; then
  (cd scripts/ci/compose-check && go build -o "$CACHE/bin/compose-check" .)
fi
compose-check docker-compose.stack.yml

# One port table: every service's port in code appears in the chart and compose file.
while read -r name port; do
  grep -Eq "^  $name: *\{ port: $port," helm/somagent/values.yaml ||
    { echo "helm/somagent/values.yaml: $name is not on port $port" >&2; exit 1; }
  grep -q "http://$name:$port\$" docker-compose.stack.yml ||
    { echo "docker-compose.stack.yml: $name is not reached on port $port" >&2; exit 1; }
done < <(sed -nE 's/^    name: "([a-z-]+)",$/\1/p; s/^    port: ([0-9]+),$/\1/p' crates/common/src/service.rs | paste - -)
# Alert rules: valid, each alert firing (and staying quiet) as its unit tests say, and
# each linking a runbook that exists. The dashboards are JSON with a uid each.
promtool check rules deploy/prometheus/alerts.yaml
(cd deploy/prometheus && promtool test rules alerts.test.yaml)
grep -o 'runbook_url: .*' deploy/prometheus/alerts.yaml | sed 's#.*/runbooks/##' | sort -u |
  while read -r page; do
    [ -f "runbooks/$page" ] || { echo "deploy/prometheus/alerts.yaml: runbooks/$page does not exist" >&2; exit 1; }
  done
for dashboard in deploy/grafana/*.json; do
  python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); assert d["uid"] and d["panels"], "no uid or panels"' "$dashboard" ||
    { echo "$dashboard is not a dashboard" >&2; exit 1; }
done
echo "deployment files valid"
