#!/usr/bin/env bash
# A multi-node Ray cluster made of several `ray start` processes on this machine.
#   cluster/local.sh up [WORKERS]     # head + WORKERS worker nodes (default 2), 1 CPU each
#   genai train jobs/lm-tiny.yaml --address 127.0.0.1:6380
#   cluster/local.sh down             # note: `ray stop` stops every Ray instance on the machine
set -euo pipefail
PORT=${GENAI_RAY_PORT:-6380}
case "${1:-up}" in
  up)
    export RAY_AUTH_MODE=token   # keep token authentication on for every node and driver
    ray start --head --port "$PORT" --num-cpus 1 --dashboard-host 127.0.0.1 \
      --ray-client-server-port 23001 --disable-usage-stats
    for _ in $(seq 1 "${2:-2}"); do
      ray start --address "127.0.0.1:$PORT" --num-cpus 1 --disable-usage-stats
    done
    echo "cluster up: --address 127.0.0.1:$PORT (dashboard http://127.0.0.1:8265)"
    ;;
  down)
    ray stop
    ;;
  *) echo "usage: $0 up [WORKERS] | down" >&2; exit 2 ;;
esac
