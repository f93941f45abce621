#!/usr/bin/env python3
"""Mesh benchmark: failure detection, false downs at idle, RSS, binary size.

Drives the release binary like an operator: N agents on loopback, then
repeatedly SIGKILLs one, measures how long until every survivor reports it
down, restarts it on the same data dir and waits for it to rejoin.

    cargo build --release
    python3 bench/mesh.py --nodes 5 --trials 30          # detection
    python3 bench/mesh.py --nodes 5 --idle 600 --trials 0 # false downs over 10 min

Prints one line per figure; BENCHMARKS.md keeps them with the date.
"""
import argparse, json, os, random, shutil, signal, subprocess, sys, tempfile, time, urllib.request

BIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "release", "myco")
BASE = 27000


def ports(i):
    return BASE + 10 * i, BASE + 10 * i + 1


def get(i, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{ports(i)[1]}{path}", timeout=1) as r:
        return r.read().decode()


def states(i):
    return {m["name"]: m["state"] for m in json.loads(get(i, "/v1/nodes"))}


class Mesh:
    def __init__(self, n, workdir):
        self.n, self.dir, self.procs = n, workdir, {}
        self.start(0)
        self.wait(lambda: self.ok(0), 10, "seed node up")
        self.key = os.path.join(workdir, "cluster.key")
        with open(self.key, "w") as f:
            subprocess.run([BIN, "cluster", "key", "--data-dir", self.data(0)], stdout=f, check=True)
        for i in range(1, n):
            self.start(i)

    def data(self, i):
        return os.path.join(self.dir, f"n{i}")

    def start(self, i):
        bind, api = ports(i)
        args = [BIN, "agent", "--data-dir", self.data(i), "--name", f"n{i}", "--bind", f"127.0.0.1:{bind}",
                "--api", f"127.0.0.1:{api}", "--edge", f"127.0.0.1:{bind + 2}"]
        if i:
            args += ["--join", f"127.0.0.1:{ports(0)[0]}", "--cluster-key-file", self.key]
        os.makedirs(self.data(i), exist_ok=True)
        log = open(os.path.join(self.data(i), "agent.log"), "a")
        self.procs[i] = subprocess.Popen(args, stdout=log, stderr=log)

    def ok(self, i):
        try:
            get(i, "/health")
            return True
        except Exception:
            return False

    def all_alive(self, among):
        try:
            return all(list(states(i).values()).count("alive") == self.n for i in among)
        except Exception:
            return False

    @staticmethod
    def wait(cond, limit, what):
        t0 = time.time()
        while time.time() - t0 < limit:
            if cond():
                return time.time() - t0
            time.sleep(0.02)
        raise SystemExit(f"timed out waiting for {what}")

    def stop(self):
        for p in self.procs.values():
            p.kill()
            p.wait()


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def bytes_out(i):
    for line in get(i, "/metrics").splitlines():
        if line.startswith("myco_bytes_out_total"):
            return int(float(line.split()[1]))
    return 0


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=5)
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--idle", type=int, default=0, help="seconds of idle watching for false downs")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--base", type=int, default=27000, help="first port; node i uses BASE+10i..BASE+10i+2")
    a = ap.parse_args()
    global BASE
    BASE = a.base
    rnd = random.Random(a.seed)
    work = tempfile.mkdtemp(prefix="myco-bench-")
    m = Mesh(a.nodes, work)
    try:
        formed = m.wait(lambda: m.all_alive(range(a.nodes)), 20, "mesh formed")
        print(f"formed_s={formed:.2f} nodes={a.nodes}")
        size = os.path.getsize(BIN)
        print(f"binary_bytes={size} ({size / 1e6:.1f} MB, stripped release)")
        if a.idle:
            time.sleep(5)  # let RSS settle after start-up
            print(f"idle_rss_kib={max(rss_kib(p.pid) for p in m.procs.values())} (max over {a.nodes} agents)")
            t0 = time.time()
            sent0 = [bytes_out(i) for i in range(a.nodes)]
            false_downs = 0
            while time.time() - t0 < a.idle:
                for i in range(a.nodes):
                    s = states(i)
                    false_downs += sum(1 for v in s.values() if v != "alive")
                time.sleep(0.5)
            took = time.time() - t0
            rate = max(bytes_out(i) - sent0[i] for i in range(a.nodes)) / took
            print(f"idle_s={a.idle} false_non_alive_observations={false_downs} (polled every 0.5 s on every node)")
            print(f"idle_bytes_out_per_node_per_s={rate:.0f} (max over nodes, {a.nodes}-node mesh)")
            downs = sum(open(os.path.join(m.data(i), "agent.log")).read().count("member down") for i in range(a.nodes))
            print(f"member_down_log_lines={downs}")
        detect, rejoin = [], []
        for t in range(a.trials):
            victim = rnd.randrange(1, a.nodes)
            survivors = [i for i in range(a.nodes) if i != victim]
            m.procs[victim].send_signal(signal.SIGKILL)
            m.procs[victim].wait()
            killed = time.time()

            def seen_down():
                try:
                    return all(states(i).get(f"n{victim}", "absent") in ("down", "absent") for i in survivors)
                except Exception:
                    return False
            m.wait(seen_down, 15, f"n{victim} seen down")
            detect.append(time.time() - killed)
            restarted = time.time()
            m.start(victim)
            m.wait(lambda: m.all_alive(range(a.nodes)), 20, f"n{victim} rejoined")
            rejoin.append(time.time() - restarted)
        if detect:
            print(f"detect_down_s p50={pct(detect, 50):.2f} p99={pct(detect, 99):.2f} max={max(detect):.2f} "
                  f"(all survivors, {len(detect)} SIGKILLs, {a.nodes} nodes)")
            print(f"rejoin_s p50={pct(rejoin, 50):.2f} p99={pct(rejoin, 99):.2f} max={max(rejoin):.2f}")
    finally:
        m.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
