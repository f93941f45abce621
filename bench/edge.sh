#!/usr/bin/env bash
# The edge gateway against nginx as a reverse proxy, same backend, same
# machine, same run, same number of worker threads.
#
# One agent runs a job whose instance is nginx serving a 6-byte answer (the
# backend: fast enough that the proxies are what is measured). wrk then
# drives, in turn: the backend directly, nginx proxying to it (keep-alive
# upstream pool), and the agent's edge (/bench/). Each gets the same wrk
# threads, connections and duration. Reported per target: requests/s,
# latency p50/p99 (wrk --latency), and for the two proxies CPU seconds per
# 1,000 requests and RSS after the run (from /proc).
#
# With --relay, two more agents join (same machine): wrk then also drives
# n2's edge, which reaches the backend on n1 through n1's relay (HTTP/2 over
# the mesh's mutual TLS, the default), and n3's edge, started with
# --edge-direct, which reaches it straight in plaintext: the cost of the
# secure hop is relay against direct-remote.
#
# With --delay MS, each connection waits MS milliseconds after every answer
# before its next request (wrk's Lua `delay`), so the offered rate is about
# conns * 1000 / (MS + latency) per second whatever the target: latency
# at a fixed, lower load rather than at saturation (wrk has no -R).
#
# With --rate R (after the saturated runs), each target also gets exactly R
# requests per second from the fixed-rate client `edge_rate` (an example of
# crate myco; latency from when each request was due, as wrk2 measures):
# for the added latency at a given load, e.g. half of nginx's peak.
# --rounds K repeats those K times, each round starting one target later,
# and prints each target's p99s side by side; --rate-only skips the
# saturated wrk runs (the peak is then known from an earlier run).
#
# With --callgrind, the agent runs under valgrind's callgrind instead and
# only the edge is driven: it prints the agent's user-space instructions
# per request (wrk -tTHREADS -cCONNS for SECS, less the agent's own
# background over an idle window as long). Unlike CPU time, that count
# does not depend on what else the machine runs, so it can compare two
# builds on a busy machine; kernel time is not in it. Build with symbols
# to read where they go (callgrind_annotate on the dump it names):
#   CARGO_PROFILE_RELEASE_STRIP=false CARGO_PROFILE_RELEASE_DEBUG=line-tables-only
#
# Usage: bench/edge.sh [--bin target/release/myco] [--base 23000]
#                      [--threads 2] [--conns 64] [--secs 10] [--workers 2]
#                      [--relay] [--delay MS] [--rate R]
#                      [--rate-bin target/release/examples/edge_rate] [--rounds K]
#                      [--rate-only] [--callgrind]
# Needs wrk and nginx (apt install wrk nginx). Run from the repository root.
set -euo pipefail

BIN=target/release/myco BASE=23000 THREADS=2 CONNS=64 SECS=10 WORKERS=2 RELAY="" DELAY=""
RATE="" RATE_BIN=target/release/examples/edge_rate CALLGRIND="" RATE_ONLY="" ROUNDS=1
while [ $# -gt 0 ]; do
  case $1 in
    --callgrind) CALLGRIND=1; shift;;
    --relay) RELAY=1; shift;;
    --delay) DELAY=$2; shift 2;;
    --rate) RATE=$2; shift 2;; --rate-bin) RATE_BIN=$2; shift 2;;
    --rate-only) RATE_ONLY=1; shift;; --rounds) ROUNDS=$2; shift 2;;
    --bin) BIN=$2; shift 2;; --base) BASE=$2; shift 2;;
    --threads) THREADS=$2; shift 2;; --conns) CONNS=$2; shift 2;;
    --secs) SECS=$2; shift 2;; --workers) WORKERS=$2; shift 2;;
    *) echo "unknown option $1" >&2; exit 2;;
  esac
done
for tool in wrk nginx python3 curl; do
  command -v "$tool" >/dev/null || { echo "$tool is missing (apt install wrk nginx)" >&2; exit 2; }
done
[ -x "$BIN" ] || { echo "no $BIN: cargo build --release first" >&2; exit 2; }
BIN=$(realpath "$BIN")
W=$(mktemp -d -t myco-edge-bench.XXXXXX)
AGENT="" PROXY="" N2="" N3=""
cleanup() {
  [ -n "$PROXY" ] && kill "$PROXY" 2>/dev/null
  for p in $N2 $N3; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
  [ -n "$AGENT" ] && kill "$AGENT" 2>/dev/null && wait "$AGENT" 2>/dev/null
  # The backend instance: its working directory is under $W.
  for d in /proc/[0-9]*; do
    case "$(readlink "$d/cwd" 2>/dev/null)" in "$W"*) kill -9 "${d#/proc/}" 2>/dev/null;; esac
  done
  rm -rf "$W"
}
trap cleanup EXIT

API=http://127.0.0.1:$((BASE + 1)) EDGE=http://127.0.0.1:$((BASE + 2)) NGINX_PORT=$((BASE + 5))
WRAP=()
if [ -n "$CALLGRIND" ]; then
  command -v valgrind >/dev/null || { echo "valgrind is missing (apt install valgrind)" >&2; exit 2; }
  WRAP=(valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$W/callgrind.out")
fi
"${WRAP[@]}" "$BIN" agent --data-dir "$W/n1" --name bench --bind 127.0.0.1:$BASE --api 127.0.0.1:$((BASE + 1)) \
  --edge 127.0.0.1:$((BASE + 2)) --tag role=backend >"$W/agent.log" 2>&1 &
AGENT=$!
up=""
for _ in $(seq 600); do
  curl -sf --max-time 2 "$API/health" >/dev/null && { up=1; break; }
  kill -0 "$AGENT" 2>/dev/null || break # it exited: say why, below
  sleep 0.1
done
[ -n "$up" ] || { echo "the agent did not come up (a port from --base $BASE in use?); its log:" >&2; tail -5 "$W/agent.log" >&2; exit 1; }
TOKEN=$(cat "$W/n1/api-token")

# The backend spore: nginx on $PORT, configured at start.
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
  --data "{\"name\":\"bench\",\"spore\":\"$DIGEST\",\"count\":1,\"constraints\":{\"role\":\"backend\"},\"health\":{\"http\":\"/\",\"interval_ms\":500}}" "$API/v1/jobs"
ADDR=""
for _ in $(seq 300); do
  ADDR=$(curl -sf "$API/mesh/routes" | python3 -c '
import json,sys
r=[x for x in json.load(sys.stdin)["routes"] if x["job"]=="bench"]
print(r[0]["ready"][0]["addr"] if r and r[0]["ready"] else "")') || true
  [ -n "$ADDR" ] && break; sleep 0.1
done
[ -n "$ADDR" ] || { echo "the backend did not become ready; agent log:" >&2; tail -5 "$W/agent.log" >&2; exit 1; }

# nginx as the reverse proxy: same workers as the agent's runtime threads,
# keep-alive to the backend, HTTP/1.1 upstream.
mkdir -p "$W/proxy/tmp"
cat >"$W/proxy/nginx.conf" <<EOF
worker_processes $WORKERS; daemon off; pid $W/proxy/nginx.pid; error_log $W/proxy/error.log;
events { worker_connections 4096; }
http { access_log off; client_body_temp_path $W/proxy/tmp; proxy_temp_path $W/proxy/tmp;
  fastcgi_temp_path $W/proxy/tmp; uwsgi_temp_path $W/proxy/tmp; scgi_temp_path $W/proxy/tmp;
  keepalive_requests 100000;
  upstream backend { server $ADDR; keepalive 256; }
  server { listen 127.0.0.1:$NGINX_PORT;
    location /bench/ { proxy_pass http://backend/; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for; } } }
EOF
nginx -c "$W/proxy/nginx.conf" -p "$W/proxy" &
PROXY=$!
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$NGINX_PORT/bench/" >/dev/null && break; sleep 0.1; done
curl -sf "$EDGE/bench/" >/dev/null || { echo "the edge does not answer /bench/" >&2; exit 1; }

# CPU ticks (user + system) of a process and its children threads; for
# nginx, of the master and its workers.
ticks() { local t=0 p; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo $t; }
rss_kb() { local t=0 p; for p in "$@"; do t=$((t + $(awk '/VmRSS/ {print $2}' "/proc/$p/status"))); done; echo $t; }
nginx_pids() { echo "$PROXY $(pgrep -P "$PROXY" | tr '\n' ' ')"; }
HZ=$(getconf CLK_TCK)

run() { # NAME URL PIDS...
  local name=$1 url=$2; shift 2
  local before=0 after
  [ $# -gt 0 ] && before=$(ticks "$@")
  local paced=()
  if [ -n "$DELAY" ]; then
    printf 'function delay()\n  return %s\nend\n' "$DELAY" >"$W/delay.lua"
    paced=(-s "$W/delay.lua")
  fi
  wrk -t"$THREADS" -c"$CONNS" -d"${SECS}s" --latency "${paced[@]}" "$url" >"$W/wrk-$name.txt"
  local rps p50 p99 total cpu="" rss=""
  rps=$(awk '/^Requests\/sec/ {print $2}' "$W/wrk-$name.txt")
  p50=$(awk '$1=="50%" {print $2}' "$W/wrk-$name.txt")
  p99=$(awk '$1=="99%" {print $2}' "$W/wrk-$name.txt")
  total=$(awk '/requests in/ {print $1}' "$W/wrk-$name.txt")
  if [ $# -gt 0 ]; then
    after=$(ticks "$@")
    cpu=$(python3 -c "print(f'{($after - $before) / $HZ / $total * 1000:.4f}')")
    rss=$(( $(rss_kb "$@") / 1024 ))
  fi
  printf '%-8s %10s req/s  p50 %-9s p99 %-9s cpu_s/1k_req %-8s rss_mb %s\n' "$name" "$rps" "$p50" "$p99" "$cpu" "$rss"
  grep -E "Non-2xx|Socket errors" "$W/wrk-$name.txt" || true
}

if [ -n "$CALLGRIND" ]; then
  . "$(dirname "$0")/callgrind.sh"
  wrk -t1 -c8 -d2s "$EDGE/bench/" >/dev/null
  # The agent's own background over a window as long as the loaded one.
  cg_instr on "$AGENT"; sleep "$SECS"; cg_instr off "$AGENT"
  idle=$(cg_counted "$AGENT" "$W/callgrind.out.1")
  cg_instr on "$AGENT"; wrk -t"$THREADS" -c"$CONNS" -d"${SECS}s" "$EDGE/bench/" >"$W/wrk-cg.txt"; cg_instr off "$AGENT"
  busy=$(cg_counted "$AGENT" "$W/callgrind.out.2")
  total=$(awk '/requests in/ {print $1}' "$W/wrk-cg.txt")
  echo "callgrind: wrk -t$THREADS -c$CONNS -d${SECS}s through the edge: $total requests"
  echo "agent instructions: $busy under load, $idle over as long idle; per request $(( (busy - idle) / total ))"
  cp "$W/callgrind.out.2" "${CALLGRIND_KEEP:-/tmp/edge-callgrind.out}"
  echo "dump of the loaded window: ${CALLGRIND_KEEP:-/tmp/edge-callgrind.out}"
  exit 0
fi

if [ -z "$RATE_ONLY" ]; then
  echo "wrk -t$THREADS -c$CONNS -d${SECS}s --latency${DELAY:+ (delay $DELAY ms per connection)}; nginx workers $WORKERS; backend $ADDR"
  run direct "http://$ADDR/"
  # shellcheck disable=SC2046
  run nginx "http://127.0.0.1:$NGINX_PORT/bench/" $(nginx_pids)
  run edge "$EDGE/bench/" "$AGENT"
fi

if [ -n "$RATE" ]; then
  [ -x "$RATE_BIN" ] || { echo "no $RATE_BIN: cargo build --release -p myco --example edge_rate" >&2; exit 2; }
  targets=("direct http://$ADDR/" "nginx http://127.0.0.1:$NGINX_PORT/bench/" "edge $EDGE/bench/")
  echo "edge_rate $RATE/s, $CONNS connections, ${SECS}s each, $ROUNDS round(s)"
  for ((r = 0; r < ROUNDS; r++)); do
    # Each round starts one target later, so none is always run first.
    for ((k = 0; k < 3; k++)); do
      # shellcheck disable=SC2086
      set -- ${targets[$(((r + k) % 3))]}
      printf '%-8s ' "$1"; "$RATE_BIN" "$2" "$RATE" "$CONNS" "$SECS" | tee -a "$W/rate-$1.txt"
    done
  done
  if [ "$ROUNDS" -gt 1 ]; then
    for t in direct nginx edge; do
      printf '%-8s p99 ms by round: %s\n' "$t" \
        "$(awk '{for (i = 1; i < NF; i++) if ($i == "p99") printf "%s ", $(i + 1)}' "$W/rate-$t.txt")"
    done
  fi
fi

if [ -n "$RELAY" ]; then
  "$BIN" cluster key --data-dir "$W/n1" >"$W/cluster.key"
  start_node() { # NAME INDEX EXTRA...
    local name=$1 i=$2; shift 2
    "$BIN" agent --data-dir "$W/$name" --name "$name" --bind 127.0.0.1:$((BASE + 10 * i)) \
      --api 127.0.0.1:$((BASE + 10 * i + 1)) --edge 127.0.0.1:$((BASE + 10 * i + 2)) \
      --join 127.0.0.1:$BASE --cluster-key-file "$W/cluster.key" "$@" >"$W/$name.log" 2>&1 &
  }
  start_node n2 1; N2=$!
  start_node n3 2 --edge-direct; N3=$!
  for i in 1 2; do
    for _ in $(seq 300); do
      curl -sf "http://127.0.0.1:$((BASE + 10 * i + 2))/bench/" >/dev/null && break; sleep 0.1
    done
  done
  run relay "http://127.0.0.1:$((BASE + 12))/bench/" "$N2" "$AGENT"
  run remote "http://127.0.0.1:$((BASE + 22))/bench/" "$N3"
  echo "relay: n2's edge through n1's relay (cpu and rss: both agents); remote: n3's edge straight to the backend (--edge-direct)"
fi
