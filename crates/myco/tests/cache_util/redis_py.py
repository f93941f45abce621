"""The Python `redis` client against two Myco agents' Redis protocol.

Usage: redis_py.py PORT_A PORT_B. Prints "ok" and exits 0 when every
check holds; a failed check raises (exit 1 with the traceback).
"""
import sys
import time

import redis

# protocol=2: the agent speaks RESP2 (redis-py 8 asks for RESP3 with HELLO
# by default, which a RESP2 server refuses).
a = redis.Redis(port=int(sys.argv[1]), socket_timeout=10, protocol=2)
b = redis.Redis(port=int(sys.argv[2]), socket_timeout=10, protocol=2)

# SET on one node, GET on the other.
assert a.ping()
assert a.set("py:greeting", "hello") is True
assert b.get("py:greeting") == b"hello", b.get("py:greeting")
assert b.exists("py:greeting", "py:absent") == 1
assert a.delete("py:greeting") == 1
assert b.get("py:greeting") is None

# SET k v EX 1, then expiry (polled, never a blind sleep).
assert a.set("py:brief", "v", ex=1) is True
assert b.get("py:brief") == b"v"
assert 0 < b.ttl("py:brief") <= 1, b.ttl("py:brief")
deadline = time.monotonic() + 10
while b.get("py:brief") is not None:
    assert time.monotonic() < deadline, "SET EX 1 never expired"
    time.sleep(0.05)

# PUBLISH on one node reaches SUBSCRIBE on the other.
p = b.pubsub()
p.subscribe("py-news")
confirm = p.get_message(timeout=10)
assert confirm and confirm["type"] == "subscribe", confirm
deadline = time.monotonic() + 20
got = None
while got is None:
    # The subscription is announced mesh-wide within a second; publish
    # until it has arrived (the reply counts the nodes it went to).
    a.publish("py-news", "extra")
    msg = p.get_message(timeout=0.2)
    if msg and msg["type"] == "message":
        got = msg
    assert time.monotonic() < deadline, "PUBLISH never reached the subscriber"
assert got["channel"] == b"py-news" and got["data"] == b"extra", got
p.close()

# An unsupported command: a clear error, and the connection serves on.
try:
    a.hset("py:h", "f", "v")
    raise AssertionError("HSET was accepted")
except redis.ResponseError as e:
    text = str(e)
    assert "unsupported command 'HSET'" in text and "GET" in text, text
assert a.set("py:after", "1") is True
print("ok")
