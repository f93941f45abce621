#!/usr/bin/env python3
"""GET round-trip latency with one client: a real redis-server (the
loopback round trip plus Redis' own work) against each myco node's --resp
port, one key whose primary is one of the nodes (a local GET there, a
forward to the primary on the others). The ports are asked in turn, one
GET each, so load from the rest of the machine falls on all of them alike.
Prints p50 and p90 in microseconds per port.

    python3 bench/get_latency.py REDIS_PORT MYCO_PORT... [-n N] [--alone] [--no-set]

--no-set skips the SET that gives every port the key, for servers that
answer any request with `abc` (crates/myco/examples/oneway_links.rs).
"""
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from msg_latency import resp  # noqa: E402


def conn(port):
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def ask(s, req):
    s.sendall(req)
    buf = s.recv(4096)
    # "$3\r\nabc\r\n", "$-1\r\n" or "+OK\r\n".
    while not buf.endswith(b"\r\n") or (
        buf.startswith(b"$") and not buf.startswith(b"$-") and buf.count(b"\r\n") < 2
    ):
        buf += s.recv(4096)
    return buf


def main():
    args = sys.argv[1:]
    n = 20000
    # --alone: all of one port's GETs, then the next port's, instead of one
    # GET a port in turn. In turn, a GET right after a forwarded one finds
    # the other vCPU awake; alone, every port pays its own wake-ups, as a
    # client talking to one server does (BENCHMARKS.md, thirteenth pass).
    alone = "--alone" in args
    if alone:
        args.remove("--alone")
    no_set = "--no-set" in args
    if no_set:
        args.remove("--no-set")
    if "-n" in args:
        i = args.index("-n")
        n = int(args[i + 1])
        del args[i:i + 2]
    ports = [int(a) for a in args]
    socks = [conn(p) for p in ports]
    key = b"probe:1"
    set_req = resp("SET", key, "abc")
    get_req = resp("GET", key)
    for s in [] if no_set else socks:  # every port, so each mesh asked has the key
        assert ask(s, set_req) == b"+OK\r\n"
    lat = [[] for _ in ports]
    for _ in range(200):  # warm up connections and caches
        for s in socks:
            ask(s, get_req)
    def one(i, s):
        t = time.perf_counter_ns()
        reply = ask(s, get_req)
        lat[i].append(time.perf_counter_ns() - t)
        assert reply.endswith(b"abc\r\n"), reply

    if alone:
        for i, s in enumerate(socks):
            for _ in range(n):
                one(i, s)
    else:
        for _ in range(n):
            for i, s in enumerate(socks):
                one(i, s)
    for port, ls in zip(ports, lat):
        ls.sort()
        p = lambda q: ls[int(q * len(ls))] / 1000
        print(f"port {port}: GET p50 {p(0.5):.1f} us, p90 {p(0.9):.1f} us, p99 {p(0.99):.1f} us ({len(ls)} GETs)")


if __name__ == "__main__":
    main()
