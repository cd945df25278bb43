#!/usr/bin/env bash
# Set up a Prefect server for SynthMRI Factory, idempotently, then deploy every flow.
#
#   PREFECT_API_URL=http://prefect:4200/api bash infra/bootstrap.sh
#
# 1. work pools `cpu` and `gpu` (process pools; SYNTHMRI_POOL_TYPE=kubernetes uses infra/k8s/*.json)
# 2. global concurrency limits: `gpu` (SYNTHMRI_GPU_SLOTS slots, default 1) bounds training runs and
#    generation shards on CUDA; `publish-<dataset>` limits are created by the publish flow on first use
# 3. automations in infra/automations/ (replaced by name, so reruns do not duplicate them)
# 4. `prefect deploy --all --prefect-file infra/prefect.yaml` (see that file for the SYNTHMRI_* variables)
# Then start workers where the hardware is:  prefect worker start --pool cpu   /   --pool gpu
set -euo pipefail
cd "$(dirname "$0")/.."
PREFECT=${PREFECT:-.venv/bin/prefect}
[ -x "$PREFECT" ] || PREFECT=prefect
export PREFECT_SERVER_ANALYTICS_ENABLED=${PREFECT_SERVER_ANALYTICS_ENABLED:-false}
export SYNTHMRI_PROJECT_DIR=${SYNTHMRI_PROJECT_DIR:-$PWD}
export SYNTHMRI_STORE=${SYNTHMRI_STORE:-file://$PWD/data/store}
export SYNTHMRI_S3_ENDPOINT=${SYNTHMRI_S3_ENDPOINT:-}
export SYNTHMRI_CREDENTIALS_BLOCK=${SYNTHMRI_CREDENTIALS_BLOCK:-}
pool_type=${SYNTHMRI_POOL_TYPE:-process}
gpu_slots=${SYNTHMRI_GPU_SLOTS:-1}

if [ -z "${PREFECT_API_URL:-}" ] && ! "$PREFECT" config view 2>/dev/null | grep -q "PREFECT_API_URL"; then
  echo "bootstrap: PREFECT_API_URL is not set; point it at your Prefect server (e.g. http://127.0.0.1:4200/api)" >&2
  exit 2
fi

for pool in cpu gpu; do
  if [ "$pool_type" = kubernetes ]; then
    "$PREFECT" --no-prompt work-pool create "$pool" --type kubernetes --overwrite \
      --base-job-template "infra/k8s/$pool-base-job-template.json"
  else
    "$PREFECT" --no-prompt work-pool create "$pool" --type "$pool_type" --overwrite
  fi
done

if "$PREFECT" --no-prompt global-concurrency-limit inspect gpu >/dev/null 2>&1; then
  "$PREFECT" --no-prompt global-concurrency-limit update gpu --limit "$gpu_slots"
else
  "$PREFECT" --no-prompt global-concurrency-limit create gpu --limit "$gpu_slots"
fi

for file in infra/automations/*.yaml; do
  for name in $(sed -n 's/^  - name: //p' "$file"); do
    "$PREFECT" --no-prompt automation delete "$name" >/dev/null 2>&1 || true
  done
  "$PREFECT" --no-prompt automation create --from-file "$file"
done

"$PREFECT" --no-prompt deploy --all --prefect-file infra/prefect.yaml
echo "bootstrap: deployed to ${PREFECT_API_URL:-the configured Prefect API}; store $SYNTHMRI_STORE"
