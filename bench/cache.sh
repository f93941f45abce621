#!/usr/bin/env bash
# Cache throughput with redis-benchmark against each node of a 3-node mesh
# (the benchmark's key is local to one node, remote to the others) and
# against a real redis-server in the same run; then agent RSS per cached
# 100-byte entry. Usage: bench/cache.sh [BIN] [BASE_PORT]
# STEPS picks the steps (default "ops msg rss"): ops = redis-benchmark,
# msg = publish-to-receive latency (with MSG_RATE, below), rss = memory
# per entry; rtt (not by
# default) = a 1-client GET p50 probe per node against redis-server's
# (FLOOR=1: and against redis-server behind plain forwarders, below).
# Needs redis-tools and redis-server (apt install redis-tools redis-server).
set -euo pipefail
BIN=${1:-target/release/myco}
BASE=${2:-23500}
N=${N:-100000}
STEPS=${STEPS:-ops msg rss}
# NICE=-10 runs everything measured (agents, redis-server and the clients
# alike) ahead of other work on the machine (needs root), so a shared
# machine's builds stall the figures less.
RUN=(nice -n "${NICE:-0}")
has() { [[ " $STEPS " == *" $1 "* ]]; }
C=${C:-50}
# redis-benchmark's tests for the ops step: TESTS=set,get,incr adds
# counters (one key, counter:__rand_int__, so one node is its primary).
TESTS=${TESTS:-set,get}
# The value size of the ops step's SETs, in bytes (redis-benchmark's -d;
# its default is 3).
DATA=${DATA:-3}
W=$(mktemp -d -t mycobench.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
. "$(dirname "$0")/mesh3.sh"
mesh3_up
"${RUN[@]}" redis-server --port $((BASE + 99)) --save '' --appendonly no --daemonize no >"$W/redis.log" 2>&1 &
PIDS+=($!)
sleep 0.5
bench() { # port label: "label","test","rps","avg","min","p50","p95","p99","max" (ms)
  "${RUN[@]}" redis-benchmark -p "$1" -c "$C" -n "$N" -d "$DATA" -t "$TESTS" --csv 2>/dev/null | grep -E '^"(SET|GET|INCR)"' | sed "s/^/\"$2\",/"
}
if has ops; then
  bench $((BASE + 99)) "redis-server"
  for i in 1 2 3; do bench $((BASE + 10 * i + 3)) "myco n$i"; done
fi
if has rtt; then
  # One client, GET only: the loopback round trip (redis-server) against a
  # local and a remote GET, p50 in microseconds from the latency probe.
  # RTT_ALONE=1: each port's GETs in a block of their own (see --alone).
  # FLOOR=1 adds redis-server behind nginx's stream proxy and behind
  # haproxy (mode tcp): the cost of one forward with nothing but a
  # proxy's read and write around it, the floor a myco forward is held to.
  FLOOR_PORTS=()
  if [ -n "${FLOOR:-}" ]; then
    mkdir -p "$W/nginx"
    cat >"$W/nginx.conf" <<CONF
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes 1;
daemon off;
pid $W/nginx.pid;
error_log $W/nginx/error.log;
events { worker_connections 64; }
stream {
  server { listen 127.0.0.1:$((BASE + 98)); proxy_pass 127.0.0.1:$((BASE + 99)); tcp_nodelay on; }
}
CONF
    "${RUN[@]}" nginx -p "$W/nginx" -c "$W/nginx.conf" >"$W/nginx.log" 2>&1 &
    PIDS+=($!)
    cat >"$W/haproxy.cfg" <<CONF
global
  nbthread 1
defaults
  mode tcp
  timeout connect 1s
  timeout client 60s
  timeout server 60s
listen redis
  bind 127.0.0.1:$((BASE + 97))
  server r 127.0.0.1:$((BASE + 99))
CONF
    "${RUN[@]}" haproxy -f "$W/haproxy.cfg" >"$W/haproxy.log" 2>&1 &
    PIDS+=($!)
    FLOOR_PORTS=($((BASE + 98)) $((BASE + 97)))
    # And the same forward on tokio (crates/myco/examples/forward_floor.rs,
    # built beside BIN), two workers and one thread, when it is built.
    FWD=${FWD:-$(dirname "$BIN")/examples/forward_floor}
    if [ -x "$FWD" ]; then
      "${RUN[@]}" "$FWD" 127.0.0.1:$((BASE + 96)) 127.0.0.1:$((BASE + 99)) &
      PIDS+=($!)
      "${RUN[@]}" "$FWD" 127.0.0.1:$((BASE + 95)) 127.0.0.1:$((BASE + 99)) --one-thread &
      PIDS+=($!)
      FLOOR_PORTS+=($((BASE + 96)) $((BASE + 95)))
    fi
    sleep 0.5
    echo "ports: redis-server $((BASE + 99)); behind nginx $((BASE + 98)), haproxy $((BASE + 97)), forward_floor $((BASE + 96)) (one thread: $((BASE + 95))); myco n1-n3 $((BASE + 13)) $((BASE + 23)) $((BASE + 33))"
  fi
  "${RUN[@]}" python3 "$(dirname "$0")/get_latency.py" $((BASE + 99)) "${FLOOR_PORTS[@]}" $((BASE + 13)) $((BASE + 23)) $((BASE + 33)) ${RTT_ALONE:+--alone}
fi
# Publish-to-receive latency, published on n1, received on n3, 10k/s.
# Publish on n1, receive on n3, 10k messages/s for 5 s; then the same
# tool on the real redis-server alone (one hop, no mesh), the machine's
# own floor. MSG_RATE is the native client (crates/myco/examples/
# msg_rate.rs, built beside BIN); without it, the Python one, whose own
# tail is several ms.
MSG_RATE=${MSG_RATE:-$(dirname "$BIN")/examples/msg_rate}
if has msg; then
  if [ -x "$MSG_RATE" ]; then
    echo "myco n1 -> n3: $("${RUN[@]}" "$MSG_RATE" $((BASE + 13)) $((BASE + 33)) 10000 5)"
    echo "redis-server alone: $("${RUN[@]}" "$MSG_RATE" $((BASE + 99)) $((BASE + 99)) 10000 5)"
  else
    "${RUN[@]}" python3 "$(dirname "$0")/msg_latency.py" $((BASE + 13)) $((BASE + 33)) 10000 5
  fi
fi
has rss || exit 0
# RSS per entry: 100,000 random keys of 100 bytes through node 1.
rss() { awk '/VmRSS/{print $2}' "/proc/$1/status"; }
before=0; for p in "${PIDS[@]:0:3}"; do before=$((before + $(rss "$p"))); done
redis-benchmark -p $((BASE + 13)) -c "$C" -n 300000 -r 100000 -d 100 -t set -q >/dev/null 2>&1
after=0; entries=0
for i in 1 2 3; do
  after=$((after + $(rss "${PIDS[$((i - 1))]}")))
  entries=$((entries + $(curl -sf "$(api "$i")/v1/cache" | python3 -c 'import json,sys;print(json.load(sys.stdin)["node"]["entries"])')))
done
echo "entries held (all copies): $entries; RSS growth: $(((after - before) * 1024)) bytes; per entry copy: $(((after - before) * 1024 / entries)) bytes"
