#!/usr/bin/env python3
"""Spore distribution benchmark: pack + push an N MB spore to one node, then
have the other nodes fetch it (concurrently) over the mesh, against baselines
measured in the same run: the same bytes copied over a plain TCP socket on
loopback (best of three), and the same bytes written to a file on the
agents' disk and fsynced (best of three; a fetch must do that too, a loopback
copy never does, so on a slow disk it is the fetch's floor). Also reports the
peak RSS of the agents during distribution (the holder's apart).

Next to each end-to-end time (the HTTP download, which makes the node fetch
and then streams the file back to this script) it reports the agents' own
fetch time, `myco_spore_fetch_seconds` from /metrics (node to node: from the
fetch's start to the file verified, fsynced and in place), which is the
figure to compare with the raw copy, and the CPU seconds the agents spent
(utime + stime from /proc, every agent, before and after).

With --single, node 1 first fetches the spore alone (one fetch from one
holder: the figure compared with the raw copy), then every other node fetches
it at once (from the two holders and from each other).

    cargo build --release
    python3 bench/spores.py --mb 50
    python3 bench/spores.py --mb 500 --nodes 3
    python3 bench/spores.py --mb 50 --nodes 22 --single   # issue 16: one fetch, then 20 at once
"""
import argparse, hashlib, json, os, shutil, signal, socket, subprocess, sys, tempfile, threading, time, urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mesh import BIN, Mesh, ports, rss_kib  # noqa: E402
import mesh as meshmod  # noqa: E402


def tcp_copy(path):
    """Seconds to send the file over a loopback TCP socket and drain it."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    got = [0]

    def sink():
        c, _ = srv.accept()
        while True:
            b = c.recv(1 << 20)
            if not b:
                break
            got[0] += len(b)
        c.close()
    t = threading.Thread(target=sink)
    t.start()
    t0 = time.time()
    s = socket.create_connection(srv.getsockname())
    with open(path, "rb") as f:
        s.sendfile(f)
    s.close()
    t.join()
    return time.time() - t0


def durable_write(path, where):
    """Seconds to write the file's bytes (read beforehand) to a new file in
    `where` (the agents' file system) and fsync it: what a fetch must also
    do, at this disk's speed, and what a loopback copy never does."""
    with open(path, "rb") as f:
        data = f.read()
    out = os.path.join(where, "durable-write-test")
    t0 = time.time()
    with open(out, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    took = time.time() - t0
    os.unlink(out)
    return took


def cpu_s(pids):
    """utime + stime of these processes, in seconds (threads included)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / tick


def fetch_seconds(port):
    """(count, sum) of myco_spore_fetch_seconds on the node with this API port."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    got = {}
    for line in text.splitlines():
        for k in ("count", "sum"):
            if line.startswith(f"myco_spore_fetch_seconds_{k} "):
                got[k] = float(line.split()[1])
    return int(got.get("count", 0)), got.get("sum", 0.0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=50)
    ap.add_argument("--nodes", type=int, default=5)
    ap.add_argument("--base", type=int, default=31000)
    ap.add_argument("--single", action="store_true", help="time one fetch alone first (node 1)")
    ap.add_argument("--perf", metavar="FILE", help="with --single: `perf record` the two agents (n0, n1) during the lone fetch into FILE")
    a = ap.parse_args()
    meshmod.BASE = a.base
    work = tempfile.mkdtemp(prefix="myco-spore-bench-")
    m = Mesh(a.nodes, work)
    try:
        m.wait(lambda: m.all_alive(range(a.nodes)), 20, "mesh formed")
        src = os.path.join(work, "payload")
        os.makedirs(src)
        with open(os.path.join(src, "blob"), "wb") as f:
            for _ in range(a.mb):
                f.write(os.urandom(1 << 20))
        with open(os.path.join(src, "run.sh"), "w") as f:
            f.write("#!/bin/sh\nexec sleep 3600\n")
        os.chmod(os.path.join(src, "run.sh"), 0o755)
        key = os.path.join(work, "pub.key")
        subprocess.run([BIN, "key", "gen", "--out", key], check=True, capture_output=True)
        spore = os.path.join(work, "big.spore")
        t0 = time.time()
        subprocess.run([BIN, "spore", "pack", src, "--name", "big", "--version", "1", "--cmd", "./run.sh",
                        "--key", key, "--out", spore], check=True, capture_output=True)
        t_pack = time.time() - t0
        size = os.path.getsize(spore)
        api = lambda i: f"http://127.0.0.1:{ports(i)[1]}"
        token = open(os.path.join(m.data(0), "api-token")).read().strip()
        cli = [BIN, "--api", api(0), "--token", token]
        subprocess.run(cli + ["trust", "add", key + ".pub"], check=True, capture_output=True)
        t0 = time.time()
        out = subprocess.run(cli + ["spore", "push", spore, "--json"], check=True, capture_output=True, text=True)
        t_push = time.time() - t0
        digest = json.loads(out.stdout)["digest"]

        def listed(i):
            req = urllib.request.Request(f"{api(i)}/v1/spores")
            req.add_header("Authorization", "Bearer " + open(os.path.join(m.data(i), "api-token")).read().strip())
            with urllib.request.urlopen(req, timeout=10) as r:
                return digest in r.read().decode()
        # A node learns of the spore through the replicated index; asked
        # before that it answers 404, so distribution is timed from there.
        m.wait(lambda: all(listed(i) for i in range(1, a.nodes)), 60, "spore listed on every node")
        peak = [0]
        holder_peak = [0]
        stop = threading.Event()

        def watch():
            while not stop.is_set():
                peak[0] = max(peak[0], max(rss_kib(p.pid) for p in m.procs.values()))
                holder_peak[0] = max(holder_peak[0], rss_kib(m.procs[0].pid))
                time.sleep(0.05)
        w = threading.Thread(target=watch)
        w.start()
        times = {}
        node_times = {}
        pids = [p.pid for p in m.procs.values()]

        def fetch(i):
            before = fetch_seconds(ports(i)[1])
            t = time.time()
            h = hashlib.sha256()
            with urllib.request.urlopen(f"{api(i)}/v1/spores/{digest}", timeout=600) as r:
                while True:
                    b = r.read(1 << 20)
                    if not b:
                        break
                    h.update(b)
            assert "sha256:" + h.hexdigest() == digest, f"n{i} served other bytes"
            times[i] = time.time() - t
            after = fetch_seconds(ports(i)[1])
            assert after[0] == before[0] + 1, f"n{i} counted {after[0] - before[0]} fetches"
            node_times[i] = after[1] - before[1]
        first = 1
        t_single = None
        if a.single:
            prof = None
            if a.perf:
                two = f"{m.procs[0].pid},{m.procs[1].pid}"
                prof = subprocess.Popen(["perf", "record", "-F", "4999", "-g", "-p", two, "-o", a.perf],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(1)  # perf attaches
            c0 = cpu_s(pids)
            fetch(1)
            cpu_single = cpu_s(pids) - c0
            if prof:
                prof.send_signal(signal.SIGINT)
                prof.wait()
            t_single = times.pop(1)
            n_single = node_times.pop(1)
            first = 2
        c0 = cpu_s(pids)
        t0 = time.time()
        threads = [threading.Thread(target=fetch, args=(i,)) for i in range(first, a.nodes)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        t_all = time.time() - t0
        cpu_all = cpu_s(pids) - c0
        stop.set()
        w.join()
        base = min(tcp_copy(spore) for _ in range(3))
        disk = min(durable_write(spore, work) for _ in range(3))
        mb = size / 1e6
        print(f"spore={mb:.1f} MB pack_s={t_pack:.2f} push_s={t_push:.2f} ({mb / t_push:.0f} MB/s)")
        print(f"baseline plain loopback TCP copy of the same file (best of 3): {base:.3f} s ({mb / base:.0f} MB/s)")
        print(f"the same bytes written to a file on the agents' disk and fsynced (best of 3): {disk:.3f} s ({mb / disk:.0f} MB/s) = {disk / base:.1f}x the loopback copy")
        cores = os.cpu_count()
        if t_single is not None:
            print(f"one fetch alone (n1 from n0): end to end {t_single:.2f} s, {mb / t_single:.0f} MB/s = {base / t_single:.3f} of the baseline")
            print(f"  node to node (myco_spore_fetch_seconds): {n_single:.3f} s, {mb / n_single:.0f} MB/s = {base / n_single:.3f} of the baseline")
            print(f"  agents' CPU: {cpu_single:.2f} s")
            print(f"  node to node / durable write alone: {n_single / disk:.2f}x")
        k = a.nodes - first
        print(f"arrival on {k} more nodes (concurrent fetches): {t_all:.2f} s; per node max {max(times.values()):.2f} s")
        print(f"  node to node: max {max(node_times.values()):.2f} s, mean {sum(node_times.values()) / k:.2f} s")
        print(f"  agents' CPU: {cpu_all:.2f} s = {cpu_all / k:.2f} s per fetch; floor on {cores} cores {cpu_all / cores:.2f} s")
        print(f"  disk floor: {k} durable writes one after another {k * disk:.2f} s (one disk)")
        if t_single is not None:
            print(f"all at once / one alone: {t_all / t_single:.2f}x end to end, {max(node_times.values()) / n_single:.2f}x node to node (slowest)")
        print(f"throughput per fetching node {mb / max(times.values()):.0f} MB/s = {base / max(times.values()):.3f} of the baseline")
        print(f"peak agent RSS during distribution: {peak[0] / 1024:.1f} MiB, holder n0 {holder_peak[0] / 1024:.1f} MiB (spore {mb:.0f} MB)")
    finally:
        m.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
