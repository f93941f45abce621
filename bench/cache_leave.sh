#!/usr/bin/env bash
# A graceful stop's cache hand-over: a 3-node mesh, bucket solo with ONE
# copy per key, N keys written through n1's Redis port; n3 is stopped with
# SIGTERM (it hands its keys to their owners without it, then leaves).
# Prints how many keys n3 held, how long it took to exit, and how many of
# the N keys n1 still reads.
#   bench/cache_leave.sh BIN BASE [N]   (N default 100000; needs python3-redis)
set -uo pipefail
BIN=$1; BASE=$2; N=${3:-100000}
cd "$(dirname "$0")/.."
. bench/mesh3.sh
mesh3_scratch cl
mesh3_up
T1="Authorization: Bearer $(cat $W/n1/api-token)"
curl -s -o /dev/null -X PUT -H "$T1" --data '{"replicas":1}' "$(api 1)/v1/cache/solo"
python3 - "$((BASE + 13))" "$N" <<'PY'
import sys, redis
r = redis.Redis(port=int(sys.argv[1])); n = int(sys.argv[2])
for start in range(0, n, 1000):
    p = r.pipeline(transaction=False)
    for i in range(start, min(n, start + 1000)):
        p.set(f"solo:k{i}", b"x" * 100)
    p.execute()
PY
held=$(curl -s "$(api 3)/v1/cache" | python3 -c 'import json,sys; print(json.load(sys.stdin)["node"]["entries"])')
t0=$(date +%s.%N)
kill -TERM "${PIDS[2]}"
while kill -0 "${PIDS[2]}" 2>/dev/null; do sleep 0.01; done
t1=$(date +%s.%N)
found=$(python3 - "$((BASE + 13))" "$N" <<'PY'
import sys, redis
r = redis.Redis(port=int(sys.argv[1])); n = int(sys.argv[2]); found = 0
for start in range(0, n, 1000):
    p = r.pipeline(transaction=False)
    for i in range(start, min(n, start + 1000)):
        p.get(f"solo:k{i}")
    found += sum(v is not None for v in p.execute())
print(found)
PY
)
echo "n3 held $held of $N keys (one copy each); SIGTERM to exit $(python3 -c "print(f'{($t1-$t0)*1000:.0f}')") ms; n1 reads $found of $N afterwards"
grep -h 'handed over' "$W/n3.log" | tail -1
if [ -n "${METRICS:-}" ]; then
  for i in 1 2; do curl -s "$(api $i)/metrics" | grep -E '^myco_(cache_messages_dropped|stream_failures|cache_stale)' | sed "s/^/n$i /"; done
fi
