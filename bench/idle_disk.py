#!/usr/bin/env python3
"""Disk bytes an idle mesh writes, after deletes have been collected.

Starts N agents with a short tombstone grace, writes keys, deletes half,
waits until every node has collected every tombstone, then reads each
agent's /proc/PID/io write_bytes before and after an idle window.

    cargo build --release
    python3 bench/idle_disk.py --nodes 3 --idle 300

Prints one line per figure; BENCHMARKS.md keeps them with the date.
"""
import argparse, json, os, re, subprocess, sys, tempfile, time, urllib.request

BIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "release", "myco")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--idle", type=int, default=300, help="idle seconds measured")
    ap.add_argument("--base", type=int, default=34000)
    ap.add_argument("--bin", default=BIN)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="myco-idle-disk-")
    conf = os.path.join(work, "myco.toml")
    with open(conf, "w") as f:
        f.write("[state]\ntombstone_grace_secs = 2\n")
    port = lambda i: (a.base + 10 * i, a.base + 10 * i + 1)
    procs = []

    def start(i, key=None):
        bind, api = port(i)
        d = os.path.join(work, f"n{i}")
        os.makedirs(d, exist_ok=True)
        args = [a.bin, "agent", "--config", conf, "--data-dir", d, "--name", f"n{i}",
                "--bind", f"127.0.0.1:{bind}", "--api", f"127.0.0.1:{api}", "--edge", f"127.0.0.1:{bind + 2}"]
        if i:
            args += ["--join", f"127.0.0.1:{port(0)[0]}", "--cluster-key-file", key]
        log = open(os.path.join(d, "agent.log"), "a")
        procs.append(subprocess.Popen(args, stdout=log, stderr=log))

    def http(i, method, path, body=None):
        req = urllib.request.Request(f"http://127.0.0.1:{port(i)[1]}{path}", data=body, method=method)
        token = open(os.path.join(work, f"n{i}", "api-token")).read().strip()
        req.add_header("Authorization", f"Bearer {token}")
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.read().decode()

    def wait(cond, limit, what):
        t0 = time.time()
        while time.time() - t0 < limit:
            try:
                if cond():
                    return time.time() - t0
            except Exception:
                pass
            time.sleep(0.1)
        sys.exit(f"timed out waiting for {what}")

    def metric(i, name):
        text = http(i, "GET", "/metrics")
        m = re.search(rf"^{name} (\S+)$", text, re.M)
        return float(m.group(1)) if m else None

    def written(p):
        for line in open(f"/proc/{p.pid}/io"):
            if line.startswith("write_bytes:"):
                return int(line.split()[1])

    try:
        start(0)
        wait(lambda: http(0, "GET", "/health") is not None, 10, "n0 up")
        key = os.path.join(work, "cluster.key")
        with open(key, "w") as f:
            subprocess.run([a.bin, "cluster", "key", "--data-dir", os.path.join(work, "n0")], stdout=f, check=True)
        for i in range(1, a.nodes):
            start(i, key)
        wait(lambda: all(sum(m["state"] == "alive" for m in json.loads(http(i, "GET", "/v1/nodes"))) == a.nodes
                         for i in range(a.nodes)), 20, "mesh")
        for k in range(40):
            http(k % a.nodes, "PUT", f"/v1/kv/idle/k{k}", b"value")
        for k in range(20):
            http(k % a.nodes, "DELETE", f"/v1/kv/idle/k{k}")
        took = wait(lambda: all(metric(i, "myco_state_tombstones") == 0 and metric(i, "myco_state_horizon_seconds")
                                for i in range(a.nodes)), 120, "tombstones collected everywhere")
        print(f"20 deletes collected on all {a.nodes} nodes {took:.1f} s after the last one (grace 2 s)")
        time.sleep(3)
        before = [written(p) for p in procs]
        time.sleep(a.idle)
        after = [written(p) for p in procs]
        print(f"disk bytes written in {a.idle} s idle, per node: {[x - y for x, y in zip(after, before)]}")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()


if __name__ == "__main__":
    main()
