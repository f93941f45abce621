#!/usr/bin/env python3
"""Rolling upgrade from a real previous release to this tree, one node at a time.

Builds release N from a git revision (`--from`, in its own worktree and
target dir under /tmp) and release N+1 from this tree, starts a mesh of N
on loopback, gives it state (config KV, a job of a small HTTP server, a
cache bucket) and a client loop through the edge, then upgrades one node
at a time: SIGTERM, start N+1 on the same data dir, wait until it is up,
every node sees every member alive and the job is ready again. After every
step it checks, on every node, that:

- every member is alive in every node's view;
- every KV value written before and during the upgrade reads back;
- a write on an N node reads back on an N+1 node and the other way round;
- the job's instances are ready, and a new spore pushed to one version
  is fetched and run by the other (blob streams across versions);
- cache keys written on one version read back on the other (cache
  streams), and an instance's log reads across the pair (log streams);
- no node logged that a peer is too far apart, nor dropped a datagram
  for its version.

It prints the edge loop's errors per step and the time each node took,
and exits non-zero on the first failed check (with the agents' log tails).

    python3 bench/upgrade.py                       # from d968ef7 (the release before issue 16's)
    python3 bench/upgrade.py --from v0.4.0         # the next release: from this one
    python3 bench/upgrade.py --from-bin OLD --to-bin NEW   # prebuilt binaries, no build

Builds use `CARGO_PROFILE_RELEASE_LTO=off CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16`
(fat LTO takes 40 minutes here and changes no format). N+1 goes to
$CARGO_TARGET_DIR (or ./target). Not in CI: it builds two releases.
"""
import argparse, json, os, shutil, signal, subprocess, sys, tempfile, threading, time, urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_FROM = "d968ef7"
BUILD_ENV = {"CARGO_PROFILE_RELEASE_LTO": "off", "CARGO_PROFILE_RELEASE_CODEGEN_UNITS": "16"}

# The workload (bench/jobs.py's): answers every GET with who it is, and
# says so on stdout (the log the log-stream check reads from another node).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from jobs import SERVER  # noqa: E402


class Failed(Exception):
    pass


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def wait(cond, limit, what, step=0.05):
    """Polls `cond` until it is truthy; raises Failed naming `what` after `limit` seconds."""
    t0 = time.time()
    last = None
    while time.time() - t0 < limit:
        try:
            v = cond()
            if v:
                return time.time() - t0
        except Exception as e:  # a node restarting answers nothing for a while
            last = e
        time.sleep(step)
    raise Failed(f"timed out after {limit}s waiting for {what}" + (f" (last error: {last})" if last else ""))


def build(cwd, target):
    env = {**os.environ, **BUILD_ENV, "CARGO_TARGET_DIR": target}
    log(f"building {cwd} into {target}")
    t0 = time.time()
    subprocess.run(["cargo", "build", "--release", "-p", "myco"], cwd=cwd, env=env, check=True)
    log(f"built in {time.time() - t0:.0f}s")
    return os.path.join(target, "release", "myco")


def build_old(rev, scratch):
    """Release N: a detached worktree of `rev` under `scratch`, its own target dir."""
    full = subprocess.run(["git", "-C", ROOT, "rev-parse", "--verify", f"{rev}^{{commit}}"], check=True,
                          capture_output=True, text=True).stdout.strip()
    src = os.path.join(scratch, f"src-{full[:7]}")
    if not os.path.isdir(src):
        subprocess.run(["git", "-C", ROOT, "worktree", "add", "--detach", src, full], check=True)
    head = subprocess.run(["git", "-C", src, "rev-parse", "HEAD"], check=True, capture_output=True,
                          text=True).stdout.strip()
    if head != full:
        raise Failed(f"{src} is at {head}, not {full}: remove it (git worktree remove {src})")
    return build(src, os.path.join(scratch, f"target-{full[:7]}"))


class Node:
    def __init__(self, i, work, base):
        self.i, self.name = i, f"n{i}"
        self.bind, self.api_port, self.edge_port = base + 10 * i, base + 10 * i + 1, base + 10 * i + 2
        self.dir = os.path.join(work, self.name)
        self.log = os.path.join(work, f"{self.name}.log")
        self.proc, self.version = None, None

    @property
    def api(self):
        return f"http://127.0.0.1:{self.api_port}"

    def token(self):
        with open(os.path.join(self.dir, "api-token")) as f:
            return f.read().strip()

    def req(self, method, path, body=None, raw=False, timeout=10):
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        r = urllib.request.Request(self.api + path, data=data, method=method,
                                   headers={"Authorization": f"Bearer {self.token()}",
                                            "Content-Type": "application/json"})
        with urllib.request.urlopen(r, timeout=timeout) as resp:
            b = resp.read()
            return b if raw else json.loads(b or b"null")

    def kv(self, key):
        """The value of `key` on this node, or None when it has none (404)."""
        try:
            return self.req("GET", f"/v1/kv/{key}", raw=True).decode()
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return None
            raise


class Upgrade:
    def __init__(self, a, old, new, work):
        self.a, self.bins, self.work = a, {"N": old, "N+1": new}, work
        self.nodes = [Node(i, work, a.base) for i in range(a.nodes)]
        self.key_file = os.path.join(work, "cluster.key")
        self.kv_written = {}  # key -> value, every value written so far
        self.rotation = set()  # nodes the edge loop uses (a load balancer's healthy set)
        self.edge = {"ok": 0, "errors": 0, "reasons": {}, "first": []}
        self.edge_lock = threading.Lock()
        self.running = True
        self.seq = 0

    # -- agents --------------------------------------------------------
    def start(self, n, version):
        args = [self.bins[version], "agent", "--data-dir", n.dir, "--name", n.name,
                "--bind", f"127.0.0.1:{n.bind}", "--api", f"127.0.0.1:{n.api_port}",
                "--edge", f"127.0.0.1:{n.edge_port}"]
        if os.path.exists(self.key_file):
            args += ["--cluster-key-file", self.key_file]
        # Every other node as a seed: a restarted node finds the mesh whichever is up.
        for o in self.nodes:
            if o is not n and o.proc:
                args += ["--join", f"127.0.0.1:{o.bind}"]
        os.makedirs(n.dir, exist_ok=True)
        with open(n.log, "a") as f:
            f.write(f"\n===== {time.strftime('%H:%M:%S')} start {version}: {' '.join(args)}\n")
        out = open(n.log, "a")
        n.proc = subprocess.Popen(args, stdout=out, stderr=out, start_new_session=True)
        n.version = version
        wait(lambda: n.req("GET", "/health")["status"] == "ok", 30, f"{n.name} ({version}) healthy")

    def stop(self, n):
        n.proc.send_signal(signal.SIGTERM)
        try:
            n.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            raise Failed(f"{n.name} did not exit within 60s of SIGTERM")
        if n.proc.returncode != 0:
            raise Failed(f"{n.name} exited with {n.proc.returncode} after SIGTERM")
        n.proc = None

    def cli(self, *args):
        n = self.nodes[0]
        return subprocess.run([self.bins["N"], "--api", n.api, "--token", n.token(), *args], check=True,
                              capture_output=True, text=True).stdout

    # -- checks --------------------------------------------------------
    def all_alive(self):
        for n in self.nodes:
            states = [m["state"] for m in n.req("GET", "/v1/nodes")]
            if len(states) != len(self.nodes) or states.count("alive") != len(self.nodes):
                return False
        return True

    def ready(self, n, job):
        d = n.req("GET", f"/v1/instances?job={job}")
        if isinstance(d, dict):
            d = next((v for v in d.values() if isinstance(v, list)), [])
        return [x for x in d if x.get("state") == "ready"]

    def job_ready(self, job, count):
        return all(len(self.ready(n, job)) == count for n in self.nodes)

    def put(self, n, key, value):
        n.req("PUT", f"/v1/kv/{key}", value.encode(), raw=True)
        self.kv_written[key] = value

    def check_kv(self):
        def everywhere():
            for n in self.nodes:
                for k, v in self.kv_written.items():
                    if n.kv(k) != v:
                        return False
            return True
        return wait(everywhere, 30, f"all {len(self.kv_written)} KV values on every node")

    def pairs(self):
        """(N node, N+1 node) pairs; with one version only, every ordered pair of distinct nodes."""
        old = [n for n in self.nodes if n.version == "N"]
        new = [n for n in self.nodes if n.version == "N+1"]
        if old and new:
            return [(o, w) for o in old for w in new]
        return [(a, b) for a in self.nodes for b in self.nodes if a is not b]

    def check_cross_kv(self, step):
        took = []
        for a, b in self.pairs():
            for src, dst in ((a, b), (b, a)):
                key, value = f"cross/{step}/{src.name}-to-{dst.name}", f"{src.version}@{time.time()}"
                self.put(src, key, value)
                took.append(wait(lambda: dst.kv(key) == value, 30, f"{key} written on {src.name} "
                                 f"({src.version}) read on {dst.name} ({dst.version})", step=0.01))
        return max(took)

    def check_cache(self, step):
        """Keys written on one node read on another: with replicas 1, most live on a third node or
        the other end, so reads and writes cross the mesh's cache streams."""
        for a, b in self.pairs():
            for src, dst in ((a, b), (b, a)):
                for k in range(12):
                    key, value = f"{step}-{src.name}-{dst.name}-{k}", f"v{k}-{src.version}"
                    src.req("PUT", f"/v1/cache/upgrade/{key}", value.encode(), raw=True)
                    wait(lambda: dst.req("GET", f"/v1/cache/upgrade/{key}", raw=True).decode() == value, 10,
                         f"cache key {key} put on {src.name} ({src.version}) read on {dst.name} ({dst.version})")

    def check_logs(self, job):
        """An instance's log read from a node of the other version (log streams)."""
        by_node = {n.name: n for n in self.nodes}
        mixed = len({n.version for n in self.nodes}) > 1
        read = 0
        for x in self.ready(self.nodes[0], job):
            host = by_node.get(x.get("node_name"))
            for r in self.nodes:
                if host is None or r is host or (mixed and r.version == host.version):
                    continue
                text = r.req("GET", f"/v1/logs/{job}?instance={x['id']}&tail=20", raw=True).decode()
                if "listening on" not in text:
                    raise Failed(f"the log of {x['id']} on {host.name} ({host.version}) read on {r.name} "
                                 f"({r.version}) lacks the workload's first line: {text[:200]!r}")
                read += 1
        return read

    def check_spore(self, step, push_to):
        """A new spore pushed to `push_to`, run on every node: the others fetch it across versions."""
        digest = self.pack(f"probe{step}", push_to)
        job = f"probe{step}"
        push_to.req("POST", "/v1/jobs", {"name": job, "spore": digest, "count": len(self.nodes),
                                         "strategy": "spread", "health": {"http": "/", "interval_ms": 300}})
        t = wait(lambda: self.job_ready(job, len(self.nodes)), 90,
                 f"{job} (spore pushed to {push_to.name}, {push_to.version}) ready on every node")
        hosts = sorted({x["node_name"] for x in self.ready(self.nodes[0], job)})
        push_to.req("DELETE", f"/v1/jobs/{job}", raw=True)
        return t, hosts

    def check_versions(self):
        """Fails if any agent logged that a peer is too far apart or refused a datagram's version."""
        for n in self.nodes:
            with open(n.log, errors="replace") as f:
                text = f.read()
            for bad in ("upgrade the older", "more than one release apart"):
                if bad in text:
                    line = next(l for l in text.splitlines() if bad in l)
                    raise Failed(f"{n.name} logged: {line[:300]}")
            for line in n.req("GET", "/metrics", raw=True).decode().splitlines():
                if line.startswith("myco_datagrams_dropped_total") and "bad_version" in line \
                        and float(line.split()[-1]) > 0:
                    raise Failed(f"{n.name}: {line}")

    def failures(self):
        """Handshake failures and dropped stream messages, summed over the nodes (reported)."""
        out = {}
        for n in self.nodes:
            for line in n.req("GET", "/metrics", raw=True).decode().splitlines():
                for name in ("myco_stream_failures_total{reason=\"outbound_handshake\"}",
                             "myco_stream_failures_total{reason=\"inbound_handshake\"}",
                             "myco_stream_unrouted_total", "myco_log_messages_dropped_total"):
                    if line.startswith(name + " ") or line.startswith(name + "{"):
                        out[name] = out.get(name, 0) + int(float(line.split()[-1]))
        return {k.replace("myco_", "").replace("_total", ""): v for k, v in out.items() if v}

    # -- workload --------------------------------------------------------
    def pack(self, name, push_to):
        src = os.path.join(self.work, f"src-{name}")
        os.makedirs(src, exist_ok=True)
        with open(os.path.join(src, "server.py"), "w") as f:
            f.write(SERVER)
        os.chmod(os.path.join(src, "server.py"), 0o755)
        key = os.path.join(self.work, "publisher.key")
        if not os.path.exists(key):
            subprocess.run([self.bins["N"], "key", "gen", "--out", key], check=True, capture_output=True)
            self.cli("trust", "add", key + ".pub")
        out = os.path.join(self.work, f"{name}.spore")
        subprocess.run([self.bins["N"], "spore", "pack", src, "--name", name, "--version", "1",
                        "--cmd", "./server.py", "--key", key, "--out", out], check=True, capture_output=True)
        pushed = subprocess.run([self.bins[push_to.version], "--api", push_to.api, "--token", push_to.token(),
                                 "spore", "push", out, "--json"], check=True, capture_output=True, text=True)
        return json.loads(pushed.stdout)["digest"]

    def edge_loop(self):
        """Requests through the edges of the nodes in rotation, round robin, one at a time."""
        k = 0
        while self.running:
            up = sorted(self.rotation)
            if not up:
                time.sleep(0.01)
                continue
            n = self.nodes[up[k % len(up)]]
            k += 1
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{n.edge_port}/web/", timeout=5) as r:
                    ok = r.status == 200 and b'"job": "web"' in r.read()
                reason = None if ok else "bad answer"
            except urllib.error.HTTPError as e:
                reason = f"{n.name}: HTTP {e.code}"
            except Exception as e:
                reason = f"{n.name}: {type(e).__name__}"
            with self.edge_lock:
                if reason:
                    self.edge["errors"] += 1
                    self.edge["reasons"][reason] = self.edge["reasons"].get(reason, 0) + 1
                    if len(self.edge["first"]) < 20:  # when, to match with the agents' logs
                        self.edge["first"].append(f"{time.strftime('%H:%M:%S')}.{int(time.time() * 1000) % 1000:03d} "
                                                  f"{reason}")
                else:
                    self.edge["ok"] += 1

    def edge_counts(self):
        with self.edge_lock:
            return self.edge["ok"], self.edge["errors"], dict(self.edge["reasons"])

    # -- the run ---------------------------------------------------------
    def checks(self, step):
        wait(self.all_alive, 60, "every member alive in every node's view")
        wait(lambda: self.job_ready("web", len(self.nodes)), 90, "job web ready in every node's view")
        kv_s = self.check_kv()
        cross_s = self.check_cross_kv(step)
        self.check_cache(step)
        logs = self.check_logs("web")
        mixed = {n.version for n in self.nodes} == {"N", "N+1"}
        spore = ""
        if mixed:
            # Alternate the pushing version: N+1 fetches from N, then N from N+1.
            older = [n for n in self.nodes if n.version == "N"]
            newer = [n for n in self.nodes if n.version == "N+1"]
            push_to = older[0] if len(newer) <= len(older) else newer[0]
            t, hosts = self.check_spore(step, push_to)
            spore = f" spore_pushed_to={push_to.name}({push_to.version})_ready_on={','.join(hosts)}_in={t:.1f}s"
        self.check_versions()
        ok, errors, reasons = self.edge_counts()
        placed = {}
        for x in self.ready(self.nodes[0], "web"):
            placed[x["node_name"]] = placed.get(x["node_name"], 0) + 1
        versions = " ".join(f"{n.name}={n.version}" for n in self.nodes)
        log(f"checked [{versions}]: kv_values={len(self.kv_written)} kv_converged_s={kv_s:.2f} "
            f"cross_write_max_s={cross_s:.2f} log_reads={logs}{spore} web_instances={placed} edge_ok={ok} edge_errors={errors} "
            f"{reasons or ''} {self.failures() or ''}")

    def run(self):
        for n in self.nodes:
            self.start(n, "N")
            if n.i == 0:
                with open(self.key_file, "w") as f:
                    subprocess.run([self.bins["N"], "cluster", "key", "--data-dir", n.dir], stdout=f, check=True)
        wait(self.all_alive, 60, "the N mesh formed")
        log(f"mesh of {len(self.nodes)} N nodes formed")
        digest = self.pack("web", self.nodes[0])
        self.nodes[0].req("POST", "/v1/jobs", {"name": "web", "spore": digest, "count": len(self.nodes),
                                               "strategy": "spread", "health": {"http": "/", "interval_ms": 300}})
        self.nodes[0].req("PUT", "/v1/cache/upgrade", {"ttl_ms": 600000, "max_entries": 10000, "replicas": 1},
                          raw=True)
        for n in self.nodes:
            for k in range(5):
                self.put(n, f"config/before/{n.name}/{k}", f"written on {n.name} ({n.version}) #{k}")
        wait(lambda: self.job_ready("web", len(self.nodes)), 90, "job web ready before the upgrade")
        self.rotation = {n.i for n in self.nodes}
        edge = threading.Thread(target=self.edge_loop, daemon=True)
        edge.start()
        self.checks("before")
        timings = []
        for n in self.nodes:
            others = [o for o in self.nodes if o is not n]
            ok0, err0, _ = self.edge_counts()
            # A load balancer's health check takes the node out before its restart.
            self.rotation.discard(n.i)
            self.put(others[0], f"config/during/{n.name}/before-stop", f"on {others[0].name} before {n.name} stops")
            t0 = time.time()
            self.stop(n)
            stopped = time.time() - t0
            self.put(others[-1], f"config/during/{n.name}/while-down", f"on {others[-1].name} while {n.name} is down")
            t1 = time.time()
            self.start(n, "N+1")
            up = time.time() - t1
            wait(self.all_alive, 60, f"{n.name} (N+1) alive in every node's view")
            agreed = time.time() - t1
            wait(lambda: self.job_ready("web", len(self.nodes)), 90, "job web ready after the restart")
            total = time.time() - t0
            self.rotation.add(n.i)
            ok1, err1, reasons = self.edge_counts()
            timings.append((n.name, stopped, up, agreed, total, ok1 - ok0, err1 - err0))
            log(f"{n.name} upgraded: stop {stopped:.2f}s, start to healthy {up:.2f}s, to every member alive "
                f"{agreed:.2f}s, SIGTERM to job ready {total:.2f}s; edge during the step: {ok1 - ok0} ok, "
                f"{err1 - err0} errors {reasons or ''}")
            self.checks(f"after-{n.name}")
        self.running = False
        edge.join(timeout=10)
        ok, errors, reasons = self.edge_counts()
        print("\nnode  stop_s  start_to_healthy_s  to_all_alive_s  sigterm_to_job_ready_s  edge_ok  edge_errors")
        for name, stopped, up, agreed, total, eok, eerr in timings:
            print(f"{name:<5} {stopped:6.2f}  {up:18.2f}  {agreed:14.2f}  {total:22.2f}  {eok:7d}  {eerr:11d}")
        print(f"edge loop over the whole run: {ok} ok, {errors} errors {reasons or ''}")
        for e in self.edge["first"]:
            print(f"  edge error at {e}")
        if errors > self.a.max_edge_errors:
            raise Failed(f"{errors} edge errors (allowed: --max-edge-errors {self.a.max_edge_errors})")

    def cleanup(self):
        self.running = False
        for n in self.nodes:
            if n.proc:
                n.proc.kill()
                n.proc.wait()
        # Instances outlive a killed agent by design: end them by their cwd.
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    if os.readlink(f"/proc/{pid}/cwd").startswith(self.work):
                        os.killpg(int(pid), signal.SIGKILL)
                except OSError:
                    pass

    def tails(self):
        for n in self.nodes:
            try:
                with open(n.log, errors="replace") as f:
                    lines = f.read().splitlines()[-15:]
            except OSError:
                continue
            print(f"--- {n.name} ({n.version}) {n.log}", file=sys.stderr)
            print("\n".join(lines), file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--from", dest="rev", default=DEFAULT_FROM, help="git revision of release N")
    ap.add_argument("--from-bin", help="release N's binary (skips building --from)")
    ap.add_argument("--to-bin", help="release N+1's binary (skips building this tree)")
    ap.add_argument("--scratch", default="/tmp/myco-upgrade", help="where release N's worktree and target go")
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--base", type=int, default=26000, help="node i uses ports BASE+10i .. BASE+10i+2")
    ap.add_argument("--max-edge-errors", type=int, default=0,
                    help="edge loop errors tolerated over the run (default 0)")
    ap.add_argument("--keep", action="store_true", help="keep the data dirs and logs")
    a = ap.parse_args()
    os.makedirs(a.scratch, exist_ok=True)
    old = a.from_bin or build_old(a.rev, a.scratch)
    new = a.to_bin or build(ROOT, os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target"))
    work = tempfile.mkdtemp(prefix="myco-upgrade-")
    # Copies, so that a rebuild during the run cannot swap a binary under it.
    bins = {}
    for v, b in (("N", old), ("N+1", new)):
        bins[v] = os.path.join(work, f"myco-{v}")
        shutil.copy2(b, bins[v])
    u = Upgrade(a, bins["N"], bins["N+1"], work)
    log(f"N = {old} (from {a.from_bin or a.rev}), N+1 = {new}; work dir {work}")
    code = 0
    try:
        u.run()
        log("PASS: rolling upgrade N -> N+1 kept every check")
    except (Failed, subprocess.CalledProcessError, urllib.error.URLError, OSError) as e:
        log(f"FAIL: {e}")
        u.tails()
        code = 1
    finally:
        u.cleanup()
        if a.keep or code:
            log(f"logs and data dirs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    sys.exit(code)


if __name__ == "__main__":
    main()
