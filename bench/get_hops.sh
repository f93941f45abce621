#!/usr/bin/env bash
# Context switches per GET on each agent thread (perf stat), asking each
# node of a 3-node mesh in turn with bench/get_latency.py: how many process
# wake-ups a local and a forwarded GET cost.  bench/get_hops.sh BIN BASE [N]
# EVENTS=context-switches,raw_syscalls:sys_enter also counts syscalls.
set -euo pipefail
BIN=$1; BASE=$2; N=${3:-5000}
. "$(dirname "$0")/mesh3.sh"
mesh3_scratch c5hops
mesh3_up
cd "$(dirname "$0")/.."
for port in $((BASE+13)) $((BASE+23)) $((BASE+33)); do
  perf stat -e ${EVENTS:-context-switches} -p "$(IFS=,; echo "${PIDS[*]}")" --per-thread -o "$W/perf.$port" -- python3 bench/get_latency.py $port -n "$N" >"$W/lat.$port" 2>&1 || true
  echo "port $port: $(grep GET "$W/lat.$port")"
  awk -v n="$N" '$3 ~ /^(context-switches|raw_syscalls:sys_enter)$/ && $2 ~ /^[0-9,]+$/ {gsub(",","",$2); name=$1; tid=name; sub(/-[0-9]+$/,"",name); sub(/.*-/,"",tid); print "  " name " (tid " tid "): " sprintf("%.2f", $2/n) " " $3 " per GET"}' "$W/perf.$port"
done
echo "pids ${PIDS[*]}"
