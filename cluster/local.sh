#!/usr/bin/env bash
# A real multi-node Ray cluster on this machine: one `ray start` process per node, token auth on.
#   cluster/local.sh up [NODES]      # head + NODES-1 worker nodes (default 3), 1 CPU each
#   export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=runs/local-cluster/auth_token   (printed by `up`)
#   genai submit jobs/lm-tiny.yaml --address http://127.0.0.1:<dashboard port>
#   cluster/local.sh status
#   cluster/local.sh down            # stops only the nodes `up` started, by pid (never `ray stop`)
# Further options (e.g. --worker-memory-mb 2000) go to python -m genai.testing.localcluster.
# GENAI_CLUSTER_DIR (default runs/local-cluster) holds the state, node logs and the auth token.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
exec "$PY" -m genai.testing.localcluster "${1:-up}" ${2:+"$2"} "${@:3}" --dir "${GENAI_CLUSTER_DIR:-runs/local-cluster}"
