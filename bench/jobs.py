#!/usr/bin/env python3
"""Jobs benchmark: deploy-to-ready against the workload's own start time,
agent memory per running instance, and disk bytes written while idle.

Drives the release binary like an operator: N agents on loopback, a spore
of a small Python HTTP server (health check over HTTP, 300 ms interval).

1. Baseline: the workload started by hand, until its /health answers.
2. Deploy of a job (count 3, spread; spore already on every node) until
   3 instances are ready, then stop it; --trials times.
3. 50 instances of a sleeping workload packed on one node: agent RSS per
   instance after a settling minute, and write_bytes of every agent
   (/proc/PID/io) over --idle seconds.

    cargo build --release
    python3 bench/jobs.py --trials 10 --idle 600

Prints one line per figure; BENCHMARKS.md keeps them with the date.
"""
import argparse, json, os, socket, statistics, subprocess, sys, tempfile, time, urllib.request

BIN = os.environ.get("MYCO_BIN") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "release", "myco")

SERVER = r'''#!/usr/bin/env python3
import http.server, json, os
ME = json.dumps({"job": os.environ.get("MYCO_JOB", ""), "instance": os.environ.get("MYCO_INSTANCE", ""),
                 "node": os.environ.get("MYCO_NODE", "")}).encode()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(ME)))
        self.end_headers()
        self.wfile.write(ME)
    def log_message(self, *a):
        pass
print("listening on", os.environ["PORT"], flush=True)
http.server.ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), H).serve_forever()
'''


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(cond, limit, what, step=0.01):
    t0 = time.time()
    while time.time() - t0 < limit:
        v = cond()
        if v:
            return time.time() - t0
        time.sleep(step)
    raise SystemExit(f"timed out waiting for {what}")


class Mesh:
    def __init__(self, n, work, base):
        self.n, self.work, self.base, self.procs = n, work, base, {}
        for i in range(n):
            if i == 1:
                self.key = os.path.join(work, "cluster.key")
                with open(self.key, "w") as f:
                    subprocess.run([BIN, "cluster", "key", "--data-dir", self.data(0)], stdout=f, check=True)
            self.start(i)
            wait(lambda: self.ok(i), 20, f"n{i} up")
        wait(lambda: all(self.alive(i) == n for i in range(n)), 30, "all alive")

    def data(self, i):
        return os.path.join(self.work, f"n{i}")

    def api(self, i):
        return f"http://127.0.0.1:{self.base + 10 * i + 1}"

    def start(self, i):
        b = self.base + 10 * i
        args = [BIN, "agent", "--data-dir", self.data(i), "--name", f"n{i}", "--bind", f"127.0.0.1:{b}",
                "--api", f"127.0.0.1:{b + 1}", "--edge", f"127.0.0.1:{b + 2}"]
        if i:
            args += ["--join", f"127.0.0.1:{self.base}", "--cluster-key-file", self.key]
        os.makedirs(self.data(i), exist_ok=True)
        log = open(os.path.join(self.work, f"n{i}.log"), "a")
        self.procs[i] = subprocess.Popen(args, stdout=log, stderr=log)

    def token(self, i):
        with open(os.path.join(self.data(i), "api-token")) as f:
            return f.read().strip()

    def req(self, i, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        r = urllib.request.Request(self.api(i) + path, data=data, method=method,
                                   headers={"Authorization": f"Bearer {self.token(i)}",
                                            "Content-Type": "application/json"})
        with urllib.request.urlopen(r, timeout=10) as resp:
            return json.loads(resp.read() or b"null")

    def ok(self, i):
        try:
            return self.req(i, "GET", "/health")
        except Exception:
            return False

    def alive(self, i):
        try:
            return [m["state"] for m in self.req(i, "GET", "/v1/nodes")].count("alive")
        except Exception:
            return 0

    def ready(self, i, job):
        try:
            d = self.req(i, "GET", f"/v1/instances?job={job}")
        except Exception:
            return 0
        if isinstance(d, dict):
            d = next((v for v in d.values() if isinstance(v, list)), [])
        return sum(1 for x in d if x.get("state") == "ready")

    def stop(self):
        for p in self.procs.values():
            p.kill()
            p.wait()


def procs_under(root):
    n = 0
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if os.readlink(f"/proc/{pid}/cwd").startswith(root):
                    n += 1
            except OSError:
                pass
    return n


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def write_bytes(pid):
    with open(f"/proc/{pid}/io") as f:
        for line in f:
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    return 0


def pack(m, work, name, script, cmd):
    src = os.path.join(work, f"src-{name}")
    os.makedirs(src, exist_ok=True)
    path = os.path.join(src, cmd)
    with open(path, "w") as f:
        f.write(script)
    os.chmod(path, 0o755)
    key = os.path.join(work, "pub.key")
    if not os.path.exists(key):
        subprocess.run([BIN, "key", "gen", "--out", key], check=True, capture_output=True)
        subprocess.run([BIN, "--api", m.api(0), "--token", m.token(0), "trust", "add", key + ".pub"],
                       check=True, capture_output=True)
    out = os.path.join(work, f"{name}.spore")
    subprocess.run([BIN, "spore", "pack", src, "--name", name, "--version", "1", "--cmd", "./" + cmd,
                    "--key", key, "--out", out], check=True, capture_output=True)
    pushed = subprocess.run([BIN, "--api", m.api(0), "--token", m.token(0), "spore", "push", out, "--json"],
                            check=True, capture_output=True, text=True)
    return json.loads(pushed.stdout)["digest"]


def baseline(work):
    """The workload's own start time: spawned by hand until /health answers."""
    path = os.path.join(work, "server.py")
    with open(path, "w") as f:
        f.write(SERVER)
    os.chmod(path, 0o755)
    times = []
    for _ in range(5):
        port = free_port()
        t0 = time.time()
        # Through its shebang, as the agent runs it (`env python3` may be a
        # slow shim, e.g. pyenv's: that is part of the workload's start).
        p = subprocess.Popen([path], env={**os.environ, "PORT": str(port)})

        def up():
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).read()
                return True
            except Exception:
                return False
        wait(up, 10, "the workload by hand", step=0.005)
        times.append(time.time() - t0)
        p.kill()
        p.wait()
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--instances", type=int, default=50)
    ap.add_argument("--idle", type=int, default=600, help="idle seconds measured with the instances running")
    ap.add_argument("--base", type=int, default=36000)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="myco-bench-jobs-")
    start = baseline(work)
    print(f"workload start by hand (server.py through its shebang, until /health): median {start * 1000:.0f} ms")
    m = Mesh(a.nodes, work, a.base)
    try:
        digest = pack(m, work, "hello", SERVER, "server.py")
        # Every node holds the spore before the timed deploys.
        m.req(0, "POST", "/v1/jobs", {"name": "warm", "spore": digest, "count": a.nodes, "strategy": "spread",
                                      "health": {"http": "/health", "interval_ms": 300}})
        wait(lambda: m.ready(0, "warm") == a.nodes, 60, "warm-up job ready", step=0.05)
        m.req(0, "DELETE", "/v1/jobs/warm")
        wait(lambda: procs_under(work) == 0, 30, "warm-up stopped", step=0.05)
        times = []
        for t in range(a.trials):
            job = f"d{t}"
            t0 = time.time()
            m.req(t % a.nodes, "POST", "/v1/jobs", {"name": job, "spore": digest, "count": 3, "strategy": "spread",
                                                    "health": {"http": "/health", "interval_ms": 300}})
            wait(lambda: m.ready((t + 1) % a.nodes, job) == 3, 60, f"{job} ready")
            times.append(time.time() - t0)
            m.req(0, "DELETE", f"/v1/jobs/{job}")
            wait(lambda: procs_under(work) == 0, 30, f"{job} stopped", step=0.05)
        times.sort()
        print(f"deploy of 3 -> 3 ready (spore present), {a.trials} trials: median {statistics.median(times) * 1000:.0f} ms, "
              f"max {times[-1] * 1000:.0f} ms; minus the workload's own start: {(statistics.median(times) - start) * 1000:.0f} ms")

        sleeper = pack(m, work, "sleeper", "#!/bin/sh\nexec sleep 1000000\n", "run.sh")
        pid0 = m.procs[0].pid
        rss_before = {i: rss_kib(p.pid) for i, p in m.procs.items()}
        m.req(0, "POST", "/v1/jobs", {"name": "idle", "spore": sleeper, "count": a.instances, "strategy": "pack",
                                      "resources": {"cpu_milli": 1, "memory_mb": 1, "pids": 4}})
        wait(lambda: m.ready(0, "idle") == a.instances, 120, "the idle job ready", step=0.1)
        time.sleep(60)  # the blocking pool's threads exit after their idle timeout
        per_node = {i: procs_under(m.data(i)) for i in m.procs}
        busiest = max(per_node, key=per_node.get)
        grown = rss_kib(m.procs[busiest].pid) - rss_before[busiest]
        print(f"agent RSS with {per_node[busiest]} instances on n{busiest}: {rss_kib(m.procs[busiest].pid)} KiB "
              f"(+{grown} KiB, {grown / max(per_node[busiest], 1):.0f} KiB per instance); "
              f"instances per node {per_node}; n0 pid {pid0}")
        before = {i: write_bytes(p.pid) for i, p in m.procs.items()}
        time.sleep(a.idle)
        after = {i: write_bytes(p.pid) for i, p in m.procs.items()}
        print(f"bytes written by each agent over {a.idle} s idle with {a.instances} instances ready: "
              + ", ".join(f"n{i} {after[i] - before[i]}" for i in sorted(after)))
    finally:
        m.stop()
        # Instances outlive a killed agent by design: end them by their cwd.
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    if os.readlink(f"/proc/{pid}/cwd").startswith(work):
                        os.killpg(int(pid), 9)
                except OSError:
                    pass


if __name__ == "__main__":
    main()
