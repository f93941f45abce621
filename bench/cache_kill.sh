#!/usr/bin/env bash
# Cache writes right after a key owner's SIGKILL: a 3-node mesh, bucket w
# with 2 replicas; n3 is killed and n1 at once takes 30 PUTs (about two
# thirds of them have n3 among their owners), before membership sees n3
# down. Prints the answers, the slowest PUT and when the last was done.
#   bench/cache_kill.sh BIN BASE
set -uo pipefail
BIN=$1; BASE=$2
cd "$(dirname "$0")/.."
. bench/mesh3.sh
mesh3_scratch si
mesh3_up
T1="Authorization: Bearer $(cat $W/n1/api-token)"
curl -s -o /dev/null -X PUT -H "$T1" --data '{"replicas":2}' "$(api 1)/v1/cache/w"
curl -s -o /dev/null -X PUT -H "$T1" --data-binary v "$(api 1)/v1/cache/w/warm"
kill -9 "${PIDS[2]}"
python3 - "$(api 1)" "$(cat $W/n1/api-token)" <<'PY'
import sys, time, urllib.request
api, tok = sys.argv[1], sys.argv[2]
h = {"Authorization": "Bearer " + tok}
t0 = time.time(); times = []; codes = {}
for k in range(30):
    s = time.time()
    try:
        r = urllib.request.urlopen(urllib.request.Request(f"{api}/v1/cache/w/after{k}", data=b"v", headers=h, method="PUT"), timeout=5); c = r.status
    except urllib.error.HTTPError as e: c = e.code
    times.append((time.time() - s) * 1000); codes[c] = codes.get(c, 0) + 1
times.sort()
print(f"30 PUTs right after SIGKILL of n3: answers {codes}, slowest {times[-1]:.0f} ms, p50 {times[15]:.1f} ms, all done {1000*(time.time()-t0):.0f} ms after the kill")
PY
