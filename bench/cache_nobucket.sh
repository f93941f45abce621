#!/usr/bin/env bash
# A PUT to a bucket no node knows, on a 3-node mesh: 20 of them (each a
# different name), their statuses and p50 / max time.
#   bench/cache_nobucket.sh BIN BASE
set -uo pipefail
BIN=$1; BASE=$2
cd "$(dirname "$0")/.."
. bench/mesh3.sh
mesh3_scratch nb
mesh3_up
T1="Authorization: Bearer $(cat $W/n1/api-token)"
for i in $(seq 20); do curl -s -o /dev/null -w '%{http_code} %{time_total}\n' -X PUT -H "$T1" --data-binary v "$(api 1)/v1/cache/nope$i/k"; done | sort -k2 -n | awk '{c[$1]++; t[NR]=$2} END {for (k in c) printf "status %s x%d; ", k, c[k]; printf "p50 %.1f ms, max %.1f ms\n", t[10]*1000, t[NR]*1000}'
