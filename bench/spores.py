#!/usr/bin/env python3
"""Spore distribution benchmark: pack + push an N MB spore to one node, then
have 4 more nodes fetch it (concurrently) over the mesh, against a baseline
measured in the same run: the same bytes copied over a plain TCP socket on
loopback. Also reports the peak RSS of the agents during distribution.

    cargo build --release
    python3 bench/spores.py --mb 50
    python3 bench/spores.py --mb 500 --nodes 3
"""
import argparse, hashlib, json, os, shutil, socket, subprocess, sys, tempfile, threading, time, urllib.request

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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=50)
    ap.add_argument("--nodes", type=int, default=5)
    ap.add_argument("--base", type=int, default=31000)
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
        peak = [0]
        stop = threading.Event()

        def watch():
            while not stop.is_set():
                peak[0] = max(peak[0], max(rss_kib(p.pid) for p in m.procs.values()))
                time.sleep(0.05)
        w = threading.Thread(target=watch)
        w.start()
        times = {}

        def fetch(i):
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
        t0 = time.time()
        threads = [threading.Thread(target=fetch, args=(i,)) for i in range(1, a.nodes)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        t_all = time.time() - t0
        stop.set()
        w.join()
        base = tcp_copy(spore)
        mb = size / 1e6
        print(f"spore={mb:.1f} MB pack_s={t_pack:.2f} push_s={t_push:.2f} ({mb / t_push:.0f} MB/s)")
        print(f"arrival on {a.nodes - 1} more nodes (concurrent fetches): {t_all:.2f} s; per node max {max(times.values()):.2f} s")
        print(f"baseline plain loopback TCP copy of the same file: {base:.3f} s ({mb / base:.0f} MB/s)")
        print(f"throughput per fetching node {mb / max(times.values()):.0f} MB/s = {base / max(times.values()):.3f} of the baseline")
        print(f"peak agent RSS during distribution: {peak[0] / 1024:.1f} MiB (spore {mb:.0f} MB)")
    finally:
        m.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
