#!/usr/bin/env python3
"""Publish-to-receive latency across nodes over the Redis protocol.

A subscriber on one node's --resp port, a publisher on another's; each
message's body is the send time (time.perf_counter_ns, same process), sent
in batches every millisecond to reach the asked rate. Prints p50/p99/max
and how many arrived.

    python3 bench/msg_latency.py PUB_PORT SUB_PORT [RATE] [SECONDS]
"""
import socket
import sys
import threading
import time


def resp(*args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


def main():
    pub_port, sub_port = int(sys.argv[1]), int(sys.argv[2])
    rate = int(sys.argv[3]) if len(sys.argv) > 3 else 10000
    secs = float(sys.argv[4]) if len(sys.argv) > 4 else 5
    sub = socket.create_connection(("127.0.0.1", sub_port))
    sub.sendall(resp("SUBSCRIBE", "lat"))
    buf = b""
    while buf.count(b"\r\n") < 6:
        buf += sub.recv(4096)
    buf = b""
    lat = []
    done = threading.Event()

    def reader():
        nonlocal buf
        sub.settimeout(0.5)
        while not done.is_set():
            try:
                data = sub.recv(1 << 16)
            except socket.timeout:
                continue
            if not data:
                return
            now = time.perf_counter_ns()
            buf += data
            # *3\r\n$7\r\nmessage\r\n$3\r\nlat\r\n$N\r\n<ns>\r\n
            while True:
                i = buf.find(b"$3\r\nlat\r\n$")
                if i < 0:
                    break
                j = buf.find(b"\r\n", i + 10)
                if j < 0:
                    break
                n = int(buf[i + 10:j])
                if len(buf) < j + 2 + n + 2:
                    break
                sent = int(buf[j + 2:j + 2 + n])
                lat.append((now - sent) / 1e6)
                buf = buf[j + 2 + n + 2:]

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    time.sleep(1.5)  # the subscription's announcement reaches the publisher's node
    pub = socket.create_connection(("127.0.0.1", pub_port))
    drain = threading.Thread(target=lambda: [pub.recv(1 << 16) for _ in iter(int, 1)], daemon=True)
    drain.start()
    per_ms = max(1, rate // 1000)
    sent = 0
    start = time.perf_counter()
    while time.perf_counter() - start < secs:
        tick = time.perf_counter()
        pub.sendall(b"".join(resp("PUBLISH", "lat", str(time.perf_counter_ns())) for _ in range(per_ms)))
        sent += per_ms
        pause = 0.001 - (time.perf_counter() - tick)
        if pause > 0:
            time.sleep(pause)
    elapsed = time.perf_counter() - start
    time.sleep(1)
    done.set()
    lat.sort()
    if not lat:
        print("no message arrived")
        return
    q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]
    print(f"sent {sent} in {elapsed:.1f} s ({sent / elapsed:.0f}/s), received {len(lat)}; "
          f"latency ms p50 {q(0.5):.2f} p99 {q(0.99):.2f} max {lat[-1]:.2f}")


if __name__ == "__main__":
    main()
