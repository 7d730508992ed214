#!/usr/bin/env bash
# The real 2-node Ray cluster the cluster tests (tests/test_cluster_jobs.py) submit to:
# a head and a second node started with `ray start --address`, on this machine, every port on
# 127.0.0.1 (picked free, so other Ray instances never collide), token authentication on with
# its own token, its own temp folder. Nothing else on the machine is touched.
#
#   eval "$(bash cluster/local-test-cluster.sh up)"        # prints: export DL_RAY_TEST_CLUSTER=<folder>
#   bash cluster/local-test-cluster.sh down "$DL_RAY_TEST_CLUSTER"
#
# <folder>/cluster.json holds the dashboard (Jobs) address and the token file's path.
set -euo pipefail
PY=${PYTHON:-python3}

case "${1:-}" in
  up)
    folder=$(mktemp -d /tmp/dlray-test-XXXXXX)
    trap 'rm -rf "$folder"' ERR
    env -u RAY_AUTH_TOKEN RAY_AUTH_TOKEN_PATH="$folder/auth_token" "$PY" -m dl_ray.cli cluster up --folder "$folder" \
      --nodes 2 --cpus 1 --port 0 --dashboard-port 0 --temp-dir "$folder/ray" >&2
    echo "export DL_RAY_TEST_CLUSTER=$folder"
    ;;
  down)
    folder=${2:-${DL_RAY_TEST_CLUSTER:-}}
    [ -n "$folder" ] || { echo "usage: $0 down FOLDER (or set DL_RAY_TEST_CLUSTER)" >&2; exit 2; }
    "$PY" -m dl_ray.cli cluster down --folder "$folder" >&2
    rm -rf "$folder"
    ;;
  *)
    echo "usage: $0 up | down FOLDER" >&2
    exit 2
    ;;
esac
