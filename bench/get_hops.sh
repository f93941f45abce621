#!/usr/bin/env bash
# Context switches per GET on each agent thread (perf stat), asking each
# node of a 3-node mesh in turn with bench/get_latency.py: how many process
# wake-ups a local and a forwarded GET cost.  bench/get_hops.sh BIN BASE [N]
set -euo pipefail
BIN=$1; BASE=$2; N=${3:-5000}
W=$(mktemp -d -t c5hops.XXXXXX); PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
start() { local i=$1; shift
  "$BIN" agent --data-dir "$W/n$i" --name "n$i" --bind "127.0.0.1:$((BASE + 10 * i))" \
    --api "127.0.0.1:$((BASE + 10 * i + 1))" --edge "127.0.0.1:$((BASE + 10 * i + 2))" \
    --resp "127.0.0.1:$((BASE + 10 * i + 3))" "$@" >"$W/n$i.log" 2>&1 &
  PIDS+=($!); }
api() { echo "http://127.0.0.1:$((BASE + 10 * $1 + 1))"; }
wait_up() { for _ in $(seq 100); do curl -sf "$(api "$1")/health" >/dev/null && return; sleep 0.1; done; echo "n$1 not up"; exit 1; }
start 1; wait_up 1
"$BIN" cluster key --data-dir "$W/n1" >"$W/key"
start 2 --join "127.0.0.1:$((BASE + 10))" --cluster-key-file "$W/key"
start 3 --join "127.0.0.1:$((BASE + 10))" --cluster-key-file "$W/key"
wait_up 2; wait_up 3; sleep 3
cd "$(dirname "$0")/.."
for port in $((BASE+13)) $((BASE+23)) $((BASE+33)); do
  perf stat -e context-switches -p "$(IFS=,; echo "${PIDS[*]}")" --per-thread -o "$W/perf.$port" -- python3 bench/get_latency.py $port -n "$N" >"$W/lat.$port" 2>&1 || true
  echo "port $port: $(grep GET "$W/lat.$port")"
  awk -v n="$N" '/context-switches/ && $2 ~ /^[0-9,]+$/ {gsub(",","",$2); name=$1; tid=name; sub(/-[0-9]+$/,"",name); sub(/.*-/,"",tid); print "  " name " (tid " tid "): " sprintf("%.2f", $2/n) " per GET"}' "$W/perf.$port"
done
echo "pids ${PIDS[*]}"
