#!/usr/bin/env bash
# What encrypting a hop costs a forwarded GET, apart from myco: one client
# asks redis-server directly, through one plain forwarder, through two
# plain forwarders chained, and through two chained over TLS 1.3
# (`examples/forward_floor.rs --tls-out/--tls-in`: rustls with ring,
# AES-256-GCM, as the agents' streams), in turn (bench/get_latency.py).
# The chain's second forwarder stands where a forwarded GET's owner is;
# TLS chain − plain chain is the hop's encryption, both directions, with
# nothing else around it.
#   bench/tls_floor.sh FWD BASE [N]
#     FWD: target/release/examples/forward_floor (build it first)
set -euo pipefail
FWD=$(realpath "$1"); BASE=$2; N=${3:-20000}
cd "$(dirname "$0")/.."
W=$(mktemp -d -t tlsfloor.XXXXXX); PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$W"' EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=floor -addext subjectAltName=DNS:floor -addext basicConstraints=critical,CA:FALSE -keyout "$W/key.pem" -out "$W/cert.pem" 2>/dev/null
openssl x509 -in "$W/cert.pem" -outform der -out "$W/cert.der"
openssl pkcs8 -topk8 -nocrypt -in "$W/key.pem" -outform der -out "$W/key.der"
R=$((BASE + 9))
redis-server --port "$R" --save '' --appendonly no >"$W/redis.log" 2>&1 & PIDS+=($!)
"$FWD" "127.0.0.1:$((BASE + 1))" "127.0.0.1:$R" & PIDS+=($!)
"$FWD" "127.0.0.1:$((BASE + 3))" "127.0.0.1:$R" & PIDS+=($!)
"$FWD" "127.0.0.1:$((BASE + 2))" "127.0.0.1:$((BASE + 3))" & PIDS+=($!)
"$FWD" "127.0.0.1:$((BASE + 5))" "127.0.0.1:$R" --tls-in "$W" & PIDS+=($!)
"$FWD" "127.0.0.1:$((BASE + 4))" "127.0.0.1:$((BASE + 5))" --tls-out "$W" & PIDS+=($!)
for p in "$R" $((BASE + 1)) $((BASE + 2)) $((BASE + 4)); do
  for _ in $(seq 50); do redis-cli -p "$p" ping >/dev/null 2>&1 && break; sleep 0.1; done
done
echo "ports: redis-server $R; one forwarder $((BASE + 1)); two chained $((BASE + 2)); two chained over TLS $((BASE + 4))"
python3 bench/get_latency.py "$R" $((BASE + 1)) $((BASE + 2)) $((BASE + 4)) -n "$N"
