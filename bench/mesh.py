#!/usr/bin/env python3
"""Mesh benchmark: failure detection, false downs at idle, RSS, binary size.

Drives the release binary like an operator: N agents on loopback, then
repeatedly SIGKILLs one, measures how long until every survivor reports it
down, restarts it on the same data dir and waits for it to rejoin.

    cargo build --release
    python3 bench/mesh.py --nodes 5 --trials 30          # detection
    python3 bench/mesh.py --nodes 5 --idle 600 --trials 0 # false downs over 10 min
    python3 bench/mesh.py --nodes 5 --trials 30 --keys 10000 --listers 1   # detection while n0 lists 10,000 keys in a loop
    python3 bench/mesh.py --nodes 5 --trials 30 --keys 1000 --value-kib 64 --listers 8 --idle-conns 2000
                                                          # issue 9: 64 MB of state, 8 full listings at once, idle sockets

With --listers, n0 holds --keys keys and that many threads list them all
(following the cursor when the listing is paginated) for the whole run; a
watcher counts every time another node sees n0 as anything but alive.

Prints one line per figure; BENCHMARKS.md keeps them with the date.
"""
import argparse, json, os, random, shutil, signal, socket, subprocess, sys, tempfile, threading, time, urllib.parse
import urllib.request

BIN = os.environ.get("MYCO_BIN") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "release", "myco")
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


def token(m, i):
    with open(os.path.join(m.data(i), "api-token")) as f:
        return f.read().strip()


def fill(m, keys, value_kib):
    """Writes `keys` keys of `value_kib` KiB (binary) to n0 with 16 writers."""
    tok, port = token(m, 0), ports(0)[1]
    value = bytes(range(256)) * (value_kib * 4)

    def writer(w):
        for k in range(w, keys, 16):
            req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/kv/load/{k:06d}", data=value, method="PUT",
                                         headers={"Authorization": f"Bearer {tok}"})
            urllib.request.urlopen(req, timeout=30).read()
    ts = [threading.Thread(target=writer, args=(w,)) for w in range(16)]
    [t.start() for t in ts]
    [t.join() for t in ts]


def list_all(port):
    """One full listing of prefix load/, following a cursor if the API pages; returns (entries, bytes)."""
    n, size, cursor = 0, 0, None
    while True:
        q = {"prefix": "load/"}
        if cursor:
            q["cursor"] = cursor
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/kv?{urllib.parse.urlencode(q)}", timeout=60) as r:
            body = r.read()
        size += len(body)
        d = json.loads(body)
        items = d if isinstance(d, list) else d.get("entries", d.get("items", []))
        n += len(items)
        cursor = None if isinstance(d, list) else d.get("next") or d.get("cursor")
        if not cursor:
            return n, size


class FillWatch:
    """Every node's view of every other node while n0 takes writes: all must stay alive."""

    def __init__(self, m):
        self.m, self.running, self.not_alive, self.polls, self.seen = m, True, 0, 0, {}
        self.thread = threading.Thread(target=self.watch, daemon=True)
        self.thread.start()

    def watch(self):
        while self.running:
            for i in range(self.m.n):
                try:
                    s = states(i)
                except Exception:
                    continue
                self.polls += 1
                for name, v in s.items():
                    if v != "alive":
                        self.not_alive += 1
                        self.seen[f"n{i} saw {name} {v}"] = self.seen.get(f"n{i} saw {name} {v}", 0) + 1
            time.sleep(0.1)

    def finish(self):
        self.running = False
        self.thread.join(timeout=10)


class Load:
    """Listers on n0, idle sockets to n0's API, and a watcher of n0's state as the others see it."""

    def __init__(self, m, listers, idle_conns):
        self.m, self.stop_at, self.lists, self.bytes, self.errors = m, None, 0, 0, 0
        self.not_alive, self.watch_polls, self.running = {}, 0, True
        self.list_s = []
        self.socks = []
        for _ in range(idle_conns):
            try:
                self.socks.append(socket.create_connection(("127.0.0.1", ports(0)[1]), timeout=2))
            except OSError:
                self.errors += 1
        self.threads = [threading.Thread(target=self.lister, daemon=True) for _ in range(listers)]
        self.threads.append(threading.Thread(target=self.watch, daemon=True))
        [t.start() for t in self.threads]

    def lister(self):
        while self.running:
            try:
                t0 = time.time()
                _, b = list_all(ports(0)[1])
                self.list_s.append(time.time() - t0)
                self.lists += 1
                self.bytes += b
            except Exception:
                self.errors += 1
                time.sleep(0.05)

    def watch(self):
        while self.running:
            for i in range(1, self.m.n):
                try:
                    st = states(i).get("n0", "absent")
                except Exception:
                    continue
                self.watch_polls += 1
                # a victim just restarted has not learned n0 yet: "absent" is its own state, not n0's
                if st not in ("alive", "absent"):
                    self.not_alive[st] = self.not_alive.get(st, 0) + 1
            time.sleep(0.1)

    def finish(self):
        self.running = False
        [t.join(timeout=70) for t in self.threads]
        for s in self.socks:
            s.close()


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
    ap.add_argument("--keys", type=int, default=0, help="keys stored on n0 for the listers")
    ap.add_argument("--value-kib", type=int, default=1, help="size of each stored value")
    ap.add_argument("--listers", type=int, default=0, help="threads listing n0's keys in a loop")
    ap.add_argument("--idle-conns", type=int, default=0, help="idle TCP connections held open to n0's API")
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
        load = None
        if a.listers or a.idle_conns:
            if a.keys:
                t0 = time.time()
                watcher = FillWatch(m)
                fill(m, a.keys, a.value_kib)
                took = time.time() - t0
                watcher.finish()
                downs = sum(open(os.path.join(m.data(i), "agent.log")).read().count("member down") for i in range(a.nodes))
                print(f"filled keys={a.keys} value_kib={a.value_kib} in {took:.1f}s "
                      f"({a.keys * a.value_kib / 1024 / took:.1f} MiB/s); during the fill: "
                      f"non_alive_observations={watcher.not_alive} {watcher.seen} of {watcher.polls} polls, member_down_log_lines={downs}")
            load = Load(m, a.listers, a.idle_conns)
            time.sleep(2)
            print(f"load: listers={a.listers} idle_conns={len(load.socks)} n0_rss_kib={rss_kib(m.procs[0].pid)}")
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
        if load:
            rss = rss_kib(m.procs[0].pid)
            load.finish()
            print(f"load: full_listings={load.lists} listed_mb={load.bytes / 1e6:.0f} errors={load.errors} "
                  f"list_s_p50={pct(load.list_s, 50) if load.list_s else 0:.2f} "
                  f"n0_rss_kib={rss} n0_not_alive_observations={sum(load.not_alive.values())} {load.not_alive} of {load.watch_polls} polls")
    finally:
        m.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
