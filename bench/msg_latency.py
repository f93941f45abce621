#!/usr/bin/env python3
"""Publish-to-receive latency across nodes over the Redis protocol.

A subscriber on one node's --resp port, a publisher on another's; each
message's body is the send time (time.perf_counter_ns, CLOCK_MONOTONIC),
sent every millisecond, as many as keep the total at the asked rate; the
subscriber reads in a child process. Prints p50/p99/max and how many
arrived.

    python3 bench/msg_latency.py PUB_PORT SUB_PORT [RATE] [SECONDS]
"""
import multiprocessing
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


def read_messages(sub, done, results):
    """Reads published messages until `done`; sends the sorted latencies."""
    buf = b""
    lat = []
    sub.settimeout(0.5)
    while not done.is_set():
        try:
            data = sub.recv(1 << 16)
        except socket.timeout:
            continue
        if not data:
            break
        now = time.perf_counter_ns()
        buf += data
        # *3\r\n$7\r\nmessage\r\n$3\r\nlat\r\n$N\r\n<ns>\r\n, parsed by
        # index and trimmed once per read: slicing the buffer per message
        # was quadratic in a big read, and the agent writes a burst of
        # messages in one write.
        at = 0
        while True:
            i = buf.find(b"$3\r\nlat\r\n$", at)
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
            at = j + 2 + n + 2
        buf = buf[at:]
    lat.sort()
    results.send(lat)


def main():
    pub_port, sub_port = int(sys.argv[1]), int(sys.argv[2])
    rate = int(sys.argv[3]) if len(sys.argv) > 3 else 10000
    secs = float(sys.argv[4]) if len(sys.argv) > 4 else 5
    sub = socket.create_connection(("127.0.0.1", sub_port))
    sub.sendall(resp("SUBSCRIBE", "lat"))
    buf = b""
    while buf.count(b"\r\n") < 6:
        buf += sub.recv(4096)
    done = multiprocessing.Event()
    results, results_in = multiprocessing.Pipe(duplex=False)
    # The reader is its own process: sharing the publisher's interpreter
    # lock, it read late whenever the publisher held it, which the figures
    # counted as the agents' latency. perf_counter_ns is CLOCK_MONOTONIC
    # on Linux, the same clock in both processes.
    reader = multiprocessing.Process(target=read_messages, args=(sub, done, results_in))
    reader.start()
    time.sleep(1.5)  # the subscription's announcement reaches the publisher's node
    pub = socket.create_connection(("127.0.0.1", pub_port))
    drain = threading.Thread(target=lambda: [pub.recv(1 << 16) for _ in iter(int, 1)], daemon=True)
    drain.start()
    sent = 0
    start = time.perf_counter()
    while time.perf_counter() - start < secs:
        tick = time.perf_counter()
        # Paced on the total so far, not a fixed batch a tick: a late tick
        # catches up, so the asked rate is reached (a fixed 10 a
        # millisecond made about 8.9k/s of 10k/s).
        due = int(rate * (tick - start)) + 1 - sent
        if due > 0:
            pub.sendall(b"".join(resp("PUBLISH", "lat", str(time.perf_counter_ns())) for _ in range(due)))
            sent += due
        pause = 0.001 - (time.perf_counter() - tick)
        if pause > 0:
            time.sleep(pause)
    elapsed = time.perf_counter() - start
    time.sleep(1)
    done.set()
    lat = results.recv()
    reader.join()
    if not lat:
        print("no message arrived")
        return
    q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]
    print(f"sent {sent} in {elapsed:.1f} s ({sent / elapsed:.0f}/s), received {len(lat)}; "
          f"latency ms p50 {q(0.5):.2f} p99 {q(0.99):.2f} max {lat[-1]:.2f}")


if __name__ == "__main__":
    main()
