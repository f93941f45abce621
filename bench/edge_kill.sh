#!/usr/bin/env bash
# Error rate through the edge while a node dies under sustained load.
#
# Three agents (same machine) run a job of three nginx instances (spread:
# one per node, each answering 6 bytes). wrk drives n1's edge with
# keep-alive for SECS seconds; after KILL_AT seconds n3 and its instance
# are SIGKILLed (a machine dying). Reported: requests, non-2xx answers,
# socket errors, the error rate, and how long until n1 saw n3 down.
#
# Usage: bench/edge_kill.sh [--bin target/release/myco] [--base 24000]
#                           [--threads 2] [--conns 32] [--secs 20] [--kill-at 5]
# Needs wrk and nginx (apt install wrk nginx). Run from the repository root.
set -euo pipefail

BIN=target/release/myco BASE=24000 THREADS=2 CONNS=32 SECS=20 KILL_AT=5
while [ $# -gt 0 ]; do
  case $1 in
    --bin) BIN=$2; shift 2;; --base) BASE=$2; shift 2;;
    --threads) THREADS=$2; shift 2;; --conns) CONNS=$2; shift 2;;
    --secs) SECS=$2; shift 2;; --kill-at) KILL_AT=$2; shift 2;;
    *) echo "unknown option $1" >&2; exit 2;;
  esac
done
for tool in wrk nginx python3 curl; do
  command -v "$tool" >/dev/null || { echo "$tool is missing (apt install wrk nginx)" >&2; exit 2; }
done
[ -x "$BIN" ] || { echo "no $BIN: cargo build --release first" >&2; exit 2; }
BIN=$(realpath "$BIN")
W=$(mktemp -d -t myco-edge-kill.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
  for d in /proc/[0-9]*; do
    case "$(readlink "$d/cwd" 2>/dev/null)" in "$W"*) kill -9 "${d#/proc/}" 2>/dev/null;; esac
  done
  rm -rf "$W"
}
trap cleanup EXIT

port() { echo $((BASE + 10 * $1 + $2)); } # NODE INDEX, 0 mesh 1 api 2 edge
start_node() { # INDEX EXTRA...
  local i=$1; shift
  "$BIN" agent --data-dir "$W/n$i" --name "n$i" --bind 127.0.0.1:"$(port "$i" 0)" \
    --api 127.0.0.1:"$(port "$i" 1)" --edge 127.0.0.1:"$(port "$i" 2)" "$@" >"$W/n$i.log" 2>&1 &
  PIDS+=($!)
  disown "$!" # no "Killed" report when n3 dies
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$(port "$i" 1)/health" >/dev/null && break; sleep 0.1; done
}
start_node 1
"$BIN" cluster key --data-dir "$W/n1" >"$W/cluster.key"
start_node 2 --join 127.0.0.1:"$(port 1 0)" --cluster-key-file "$W/cluster.key"
start_node 3 --join 127.0.0.1:"$(port 1 0)" --cluster-key-file "$W/cluster.key"
N3=${PIDS[2]}
API=http://127.0.0.1:$(port 1 1) EDGE=http://127.0.0.1:$(port 1 2)
TOKEN=$(cat "$W/n1/api-token")

mkdir -p "$W/src"
cat >"$W/src/run" <<'EOF'
#!/bin/sh
d=$(pwd)
mkdir -p "$d/tmp"
cat >"$d/nginx.conf" <<CONF
worker_processes 1; daemon off; pid $d/nginx.pid; error_log $d/error.log;
events { worker_connections 4096; }
http { access_log off; client_body_temp_path $d/tmp; proxy_temp_path $d/tmp;
  fastcgi_temp_path $d/tmp; uwsgi_temp_path $d/tmp; scgi_temp_path $d/tmp;
  keepalive_requests 100000;
  server { listen 127.0.0.1:$PORT; location / { return 200 "hello\n"; } } }
CONF
exec nginx -c "$d/nginx.conf" -p "$d"
EOF
chmod +x "$W/src/run"
"$BIN" key gen --out "$W/pub.key" >/dev/null
"$BIN" --api "$API" --token "$TOKEN" trust add "$W/pub.key.pub" >/dev/null
"$BIN" spore pack "$W/src" --name bench --version 1 --cmd ./run --key "$W/pub.key" --out "$W/bench.spore" >/dev/null
DIGEST=$("$BIN" --api "$API" --token "$TOKEN" spore push "$W/bench.spore" --json | python3 -c 'import json,sys;print(json.load(sys.stdin)["digest"])')
curl -sf -o /dev/null -X POST -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
  --data "{\"name\":\"bench\",\"spore\":\"$DIGEST\",\"count\":3,\"strategy\":\"spread\",\"health\":{\"http\":\"/\",\"interval_ms\":300}}" "$API/v1/jobs"
ready() { curl -sf "$API/mesh/routes" | python3 -c '
import json,sys
r=[x for x in json.load(sys.stdin)["routes"] if x["job"]=="bench"]
print(len(r[0]["ready"]) if r else 0)'; }
for _ in $(seq 600); do [ "$(ready 2>/dev/null || echo 0)" = 3 ] && break; sleep 0.1; done
[ "$(ready)" = 3 ] || { echo "the backends did not become ready" >&2; exit 1; }

wrk -t"$THREADS" -c"$CONNS" -d"${SECS}s" "$EDGE/bench/" >"$W/wrk.txt" &
WRK=$!
sleep "$KILL_AT"
kill -9 "$N3"
for d in /proc/[0-9]*; do
  case "$(readlink "$d/cwd" 2>/dev/null)" in "$W/n3"*) kill -9 "${d#/proc/}" 2>/dev/null || true;; esac
done
T0=$(date +%s.%N)
state3() { curl -sf "$API/v1/nodes/n3" | python3 -c 'import json,sys;print(json.load(sys.stdin)["state"])'; }
while kill -0 "$WRK" 2>/dev/null && [ "$(state3 2>/dev/null || echo alive)" != down ]; do sleep 0.05; done
T1=$(date +%s.%N)
wait "$WRK"
total=$(awk '/requests in/ {print $1}' "$W/wrk.txt")
non2xx=$(awk '/Non-2xx/ {print $NF}' "$W/wrk.txt"); non2xx=${non2xx:-0}
sockerr=$(awk -F'[ ,]+' '/Socket errors/ {print $4 + $6 + $8 + $10}' "$W/wrk.txt"); sockerr=${sockerr:-0}
echo "wrk -t$THREADS -c$CONNS -d${SECS}s through n1's edge; n3 SIGKILLed at ${KILL_AT}s"
grep -E 'Requests/sec|Non-2xx|Socket errors' "$W/wrk.txt" || true
python3 -c "print(f'requests $total, non-2xx $non2xx, socket errors $sockerr, error rate {100 * ($non2xx + $sockerr) / $total:.4f}%, n1 saw n3 down after {$T1 - $T0:.2f} s')"
