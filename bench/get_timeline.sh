#!/usr/bin/env bash
# Where a forwarded GET's time goes, hop by hop: one client (bench/
# get_latency.py) asks node ASK of a 3-node mesh for a key another node
# owns, while `perf record` takes the syscall tracepoints of the client and
# the agents. Each GET is then a chain of eight events: the client's send,
# the asker's read of it, its write to the owner, the owner's wake-up, its
# write back, the asker's wake-up, its answer, the client's read of it.
# Prints the median time between each pair. Tracing adds a few µs to
# each syscall, so the total is above an untraced p50: read the shares.
#   bench/get_timeline.sh BIN BASE [ASK] [N]   (ASK: 1, 2 or 3; default 1)
# Needs perf and python3.
set -euo pipefail
BIN=$(realpath "$1"); BASE=$2; ASK=${3:-1}; N=${4:-30000}
command -v perf >/dev/null || { echo "perf is missing (apt install linux-perf)" >&2; exit 2; }
cd "$(dirname "$0")/.."
. bench/mesh3.sh
mesh3_scratch timeline
mesh3_up
ports=($((BASE + 13)) $((BASE + 23)) $((BASE + 33)))
python3 bench/get_latency.py "${ports[@]}" -n 200 >/dev/null # warm: connections, the key
python3 bench/get_latency.py "${ports[$((ASK - 1))]}" -n "$N" >"$W/lat" &
client=$!
sleep 1
events=syscalls:sys_enter_sendto,syscalls:sys_exit_recvfrom,syscalls:sys_enter_writev,syscalls:sys_exit_epoll_wait
perf record -q -o "$W/perf.data" -e "$events" -p "$client,$(IFS=,; echo "${PIDS[*]}")" -- sleep 2 2>/dev/null
wait "$client"
cat "$W/lat"
tids() { ls "/proc/$1/task" 2>/dev/null | paste -sd, -; }
asker=$(tids "${PIDS[$((ASK - 1))]}")
others=()
for i in 0 1 2; do [ "$i" != $((ASK - 1)) ] && others+=("$(tids "${PIDS[$i]}")"); done
perf script -i "$W/perf.data" 2>/dev/null >"$W/events"
python3 - "$W/events" "$client" "$asker" "${others[@]}" <<'EOF'
import re, statistics, sys

path, client, asker = sys.argv[1], int(sys.argv[2]), set(map(int, sys.argv[3].split(",")))
events = []
for line in open(path):
    m = re.match(r"\s*\S+\s+(\d+)\s+\[\d+\]\s+([\d.]+):\s+syscalls:(\w+):", line)
    if m:
        events.append((int(m.group(1)), float(m.group(2)) * 1e6, m.group(3)))

chain = [("C", "sys_enter_sendto"), ("A", "sys_exit_recvfrom"), ("A", "sys_enter_writev"),
         ("O", "sys_exit_epoll_wait"), ("O", "sys_enter_writev"), ("A", "sys_exit_epoll_wait"),
         ("A", "sys_enter_sendto"), ("C", "sys_exit_recvfrom")]
hops = ["client's send -> asker has it", "asker: request -> written to owner",
        "-> owner wakes", "owner: wake -> answer written", "-> asker wakes",
        "asker: wake -> answer to client", "-> client has it"]

def cycles(owner):
    role = lambda tid: "C" if tid == client else "A" if tid in asker else "O" if tid in owner else None
    found, cur = [], None
    for tid, t, name in events:
        r = role(tid)
        if (r, name) == chain[0]:
            cur = [t]
        elif cur is not None and (r, name) == chain[len(cur)]:
            cur.append(t)
            if len(cur) == len(chain):
                found.append(cur)
                cur = None
    return found

# The owner is whichever other agent completes the chain.
best = max((cycles(set(map(int, o.split(",")))) for o in sys.argv[4:]), key=len)
if not best:
    sys.exit("no forwarded GET found: is the key owned by the asked node?")
print(f"{len(best)} GETs traced; median µs per hop:")
for k, hop in enumerate(hops):
    print(f"  {hop:34s} {statistics.median(c[k + 1] - c[k] for c in best):6.1f}")
print(f"  {'total':34s} {statistics.median(c[-1] - c[0] for c in best):6.1f}")
EOF
