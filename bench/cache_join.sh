#!/usr/bin/env bash
# SETs through n1's Redis port while a fourth node joins: a 3-node mesh,
# bucket `key` (redis-benchmark's keys) with 2 copies, filled with
# 100,000 keys; then the same SETs once with no change and once while n4
# joins. Prints each run's SET throughput and the copies the nodes sent
# to other owners meanwhile (`moved` of GET /v1/cache, summed): the
# join's walk, and for a grace after it, versions passed on to the owners
# the join added (`rebalance::Changed`).
#   bench/cache_join.sh BIN BASE [N]   (N SETs a run, default 200000)
set -uo pipefail
BIN=$1; BASE=$2; N=${3:-200000}
cd "$(dirname "$0")/.."
. bench/mesh3.sh
mesh3_scratch cj
mesh3_up
T1="Authorization: Bearer $(cat "$W/n1/api-token")"
curl -s -o /dev/null -X PUT -H "$T1" --data '{"replicas":2}' "$(api 1)/v1/cache/key"
P=$((BASE + 13))
moved() { # nodes...: the sum of their moved counters
  local t=0 m
  for i in "$@"; do
    m=$(curl -s "$(api "$i")/v1/cache" | python3 -c 'import json,sys; print(json.load(sys.stdin)["node"]["moved"])' 2>/dev/null || echo 0)
    t=$((t + m))
  done
  echo "$t"
}
sets() { redis-benchmark -p "$P" -c 50 -n "$N" -r 100000 -d 100 -t set --csv 2>/dev/null | awk -F'"' '/^"SET"/ {print $4 " ops/s, p99 " $14 " ms"}'; }
redis-benchmark -p "$P" -c 50 -n 300000 -r 100000 -d 100 -t set -q >/dev/null 2>&1
m0=$(moved 1 2 3)
echo "no change: $(sets); moved $(($(moved 1 2 3) - m0))"
m0=$(moved 1 2 3)
start 4 --join "127.0.0.1:$((BASE + 10))" --cluster-key-file "$W/key"
echo "n4 joining: $(sets); moved $(($(moved 1 2 3 4) - m0))"
