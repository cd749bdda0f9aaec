#!/usr/bin/env bash
# A pipeline step that only emits an event and waits on the key: it needs no gate id and no
# knowledge of the gate API. The gate rule in gatehouse.yml opens the gate for it.
#   GATEHOUSE_URL=http://127.0.0.1:8080 ./pipeline-step.sh r42 0.95
# Exit 0 approved, 1 rejected, 2 expired or still pending, 3 canceled/superseded (gate wait).
set -euo pipefail
run="${1:?run id}"
auc="${2:-0.95}"
gatehouse="${GATEHOUSE_BIN:-gatehouse}"

"$gatehouse" emit --id "model-registered-$run" --type model.registered --pipeline churn-train --run "$run" --label env=prod \
  --attr model=churn --attr version=7 --attr "auc=$auc" --attr "digest=sha256:$run"
exec "$gatehouse" gate wait --key "$run/deploy" --timeout "${WAIT:-2h}"
