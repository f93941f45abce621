#!/usr/bin/env bash
# User-space instructions per GET in each agent of a 3-node mesh, all
# three under callgrind: one client asks each node's RESP port in turn
# (bench/get_latency.py), so a node's GETs are local there when it is the
# key's primary and forwarded to it from the other two. Each agent's own
# background over a window as long is subtracted (its rate from an idle
# window first). Unlike times, the counts do not depend on what else the
# machine runs. Build with symbols to read where they go
# (callgrind_annotate on the dumps kept under the printed directory):
#   CARGO_PROFILE_RELEASE_STRIP=false CARGO_PROFILE_RELEASE_DEBUG=line-tables-only
# Usage: bench/cache_instructions.sh BIN BASE [N]   (N GETs per port, default 2000)
# Needs valgrind and python3.
set -euo pipefail
BIN=$(realpath "$1"); BASE=$2; N=${3:-2000}
command -v valgrind >/dev/null || { echo "valgrind is missing (apt install valgrind)" >&2; exit 2; }
W=$(mktemp -d -t myco-cache-cg.XXXXXX); PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
RUN=(valgrind --tool=callgrind --instr-atstart=no "--callgrind-out-file=$W/cg.%p")
cd "$(dirname "$0")/.."
. bench/mesh3.sh
. bench/callgrind.sh
mesh3_up
ports=($((BASE + 13)) $((BASE + 23)) $((BASE + 33)))
python3 bench/get_latency.py "${ports[@]}" -n 100 >/dev/null # connections and the key, warm
now() { date +%s.%N; }
# Each agent's background rate, instructions per second.
t0=$(now); cg_instr on "${PIDS[@]}"; sleep 5; cg_instr off "${PIDS[@]}"; t1=$(now)
idle=()
for p in "${PIDS[@]}"; do
  idle+=("$(awk -v c="$(cg_counted "$p" "$W/cg.$p.1")" -v t="$(echo "$t1 - $t0" | bc)" 'BEGIN {print c / t}')")
done
dump=1
for port in "${ports[@]}"; do
  dump=$((dump + 1))
  t0=$(now); cg_instr on "${PIDS[@]}"
  lat=$(python3 bench/get_latency.py "$port" -n "$N")
  cg_instr off "${PIDS[@]}"; t1=$(now)
  echo "asked port $port ($(echo "$lat" | sed 's/^port [0-9]*: //'))"
  for i in 0 1 2; do
    p=${PIDS[$i]}
    # get_latency.py sends one SET and 200 warm-up GETs before the N.
    awk -v c="$(cg_counted "$p" "$W/cg.$p.$dump")" -v r="${idle[$i]}" -v t="$(echo "$t1 - $t0" | bc)" \
      -v n=$((N + 201)) -v node=$((i + 1)) \
      'BEGIN {printf "  n%d: %.0f instructions per GET (%.0f counted, %.0f of them background)\n", node, (c - r * t) / n, c, r * t}'
  done
done
echo "dumps: $W (n1, n2, n3 are pids ${PIDS[*]})"
