#!/usr/bin/env python3
"""Self-healing benchmark (issue 11): failover after SIGKILL, and the heal
of a partition. Run by hand, not in CI (minutes, and a release build).

1. N nodes on loopback (MYCO_FAULTS=1, so partitions can be injected), an
   `allowed` job of N instances (spread: one per node) with an HTTP health
   check every 300 ms.
2. --kills times: SIGKILL a node and its instances (the machine dies),
   time until N instances are ready on the other nodes; bring it back and
   wait for exactly N instance processes mesh-wide. p50 / p99 / max.
3. --partitions times: cut two nodes off from the rest (both ways) for
   --cut seconds, heal, time until exactly N instances are ready and N
   processes run; count the surplus processes seen at the heal (each side
   kept N) that were drained.

    cargo build --release
    python3 bench/heal.py --nodes 5 --kills 30 --partitions 5

Reuses bench/jobs.py's mesh driver. Prints one line per figure.
"""
import argparse, os, signal, statistics, sys, tempfile, time, json, urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ["MYCO_FAULTS"] = "1"
from jobs import Mesh, SERVER, pack, procs_under, wait  # noqa: E402


def node_id(m, i):
    return m.req(i, "GET", "/v1/status")["node"]["id"]


def instances(m, i, job):
    d = m.req(i, "GET", f"/v1/instances?job={job}")
    if isinstance(d, dict):
        d = next((v for v in d.values() if isinstance(v, list)), [])
    return d


def ready_off(m, i, job, gone):
    try:
        return sum(1 for x in instances(m, i, job) if x.get("state") == "ready" and x.get("node") not in gone)
    except Exception:
        return 0


def kill_machine(m, i):
    m.procs[i].kill()
    m.procs[i].wait()
    root = os.path.realpath(m.data(i))
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if os.readlink(f"/proc/{pid}/cwd").startswith(root):
                    os.kill(int(pid), signal.SIGKILL)
            except OSError:
                pass


def block(m, i, peers):
    addrs = [f"127.0.0.1:{m.base + 10 * p}" for p in peers]
    body = json.dumps({"block": addrs}).encode()
    r = urllib.request.Request(m.api(i) + "/v1/debug/faults", data=body, method="POST",
                               headers={"Authorization": f"Bearer {m.token(i)}", "Content-Type": "application/json"})
    urllib.request.urlopen(r, timeout=10).read()


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round((len(xs) - 1) * p / 100)))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=5)
    ap.add_argument("--kills", type=int, default=30)
    ap.add_argument("--partitions", type=int, default=5)
    ap.add_argument("--cut", type=float, default=10.0, help="seconds each partition lasts")
    ap.add_argument("--base", type=int, default=37000)
    a = ap.parse_args()
    n = a.nodes
    work = os.path.realpath(tempfile.mkdtemp(prefix="myco-bench-heal-"))
    m = Mesh(n, work, a.base)
    try:
        digest = pack(m, work, "hello", SERVER, "server.py")
        m.req(0, "POST", "/v1/jobs", {"name": "hello", "spore": digest, "count": n, "strategy": "spread",
                                      "health": {"http": "/health", "interval_ms": 300}})
        wait(lambda: m.ready(0, "hello") == n and procs_under(work) == n, 90, "hello ready", step=0.05)
        ids = {i: node_id(m, i) for i in range(n)}
        times = []
        for k in range(a.kills):
            victim = 1 + k % (n - 1)  # node 0 answers the API
            t0 = time.time()
            kill_machine(m, victim)
            wait(lambda: ready_off(m, 0, "hello", {ids[victim]}) == n, 60, f"kill {k}: ready elsewhere", step=0.02)
            times.append(time.time() - t0)
            m.start(victim)
            wait(lambda: m.alive(0) == n and procs_under(work) == n and m.ready(0, "hello") == n, 90,
                 f"kill {k}: back to exactly {n}", step=0.05)
        print(f"SIGKILL of a node -> its instances ready elsewhere, {n} nodes, {len(times)} kills: "
              f"p50 {pct(times, 50):.2f} s, p99 {pct(times, 99):.2f} s, max {max(times):.2f} s")

        heals, surplus = [], []
        for p in range(a.partitions):
            minority = [1 + (2 * p) % (n - 1), 1 + (2 * p + 1) % (n - 1)]
            majority = [i for i in range(n) if i not in minority]
            for i in range(n):
                block(m, i, majority if i in minority else minority)
            # Each side keeps n instances: wait for the minority's own n.
            wait(lambda: procs_under(m.data(minority[0])) + procs_under(m.data(minority[1])) == n, 60,
                 "the minority runs n", step=0.05)
            time.sleep(a.cut)
            most = procs_under(work)
            for i in range(n):
                block(m, i, [])
            t0 = time.time()
            peak = [most]

            def exact():
                c = procs_under(work)
                peak[0] = max(peak[0], c)
                return c == n and m.ready(0, "hello") == n and m.alive(0) == n
            wait(exact, 90, f"partition {p}: exactly {n}", step=0.02)
            heals.append(time.time() - t0)
            surplus.append(peak[0] - n)
        if heals:
            print(f"partition 2 of {n} nodes for {a.cut:.0f} s, healed -> exactly {n} processes and {n} ready, "
                  f"{len(heals)} heals: median {statistics.median(heals):.2f} s, max {max(heals):.2f} s; "
                  f"surplus instances drained per heal: {surplus}")
    finally:
        m.stop()
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    if os.readlink(f"/proc/{pid}/cwd").startswith(work):
                        os.kill(int(pid), signal.SIGKILL)
                except OSError:
                    pass


if __name__ == "__main__":
    main()
