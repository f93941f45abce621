#!/usr/bin/env bash
# CPU time per GET on each agent of a 3-node mesh, user and system apart,
# asking each node's --resp port in turn with bench/get_latency.py (one
# client): what a local and a forwarded GET cost each agent, from
# /proc/PID/stat (clock ticks, so use N of 10,000 or more).
#   bench/get_cpu.sh BIN BASE [N]
set -euo pipefail
BIN=$1; BASE=$2; N=${3:-20000}
. "$(dirname "$0")/mesh3.sh"
mesh3_scratch getcpu
mesh3_up
cd "$(dirname "$0")/.."
HZ=$(getconf CLK_TCK)
ticks() { for p in "${PIDS[@]}"; do awk '{print $14, $15}' "/proc/$p/stat"; done; }
for port in $((BASE + 13)) $((BASE + 23)) $((BASE + 33)); do
  ticks >"$W/before"
  python3 bench/get_latency.py "$port" -n "$N" >"$W/lat" 2>&1
  ticks >"$W/after"
  grep GET "$W/lat"
  paste "$W/before" "$W/after" | awk -v n="$N" -v hz="$HZ" \
    '{printf "  agent n%d: user %.1f us, system %.1f us per GET\n", NR, ($3-$1)*1e6/hz/n, ($4-$2)*1e6/hz/n}'
done
