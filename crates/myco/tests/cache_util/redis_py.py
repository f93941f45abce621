"""The Python `redis` client against two Myco agents' Redis protocol.

Usage: redis_py.py PORT_A PORT_B PROTOCOL (2 or 3: RESP2, or RESP3
chosen with HELLO 3, redis-py's default since 5). Prints "ok" and exits 0
when every check holds; a failed check raises (exit 1 with the traceback).
"""
import socket
import sys
import time

import redis

proto = int(sys.argv[3])
a = redis.Redis(port=int(sys.argv[1]), socket_timeout=10, protocol=proto)
b = redis.Redis(port=int(sys.argv[2]), socket_timeout=10, protocol=proto)

# The handshake: HELLO answers in the protocol asked for (a dict either
# way through redis-py), an unknown version is Redis' NOPROTO error and
# leaves the connection as it was.
hello = a.execute_command("HELLO", proto)
if isinstance(hello, list):  # RESP2: a flat list of names and values
    hello = dict(zip(hello[::2], hello[1::2]))
assert hello[b"proto"] == proto, hello
try:
    a.execute_command("HELLO", 4)
    raise AssertionError("HELLO 4 was accepted")
except redis.ResponseError as e:
    assert str(e).startswith("NOPROTO"), str(e)
assert a.execute_command("HELLO", proto, "SETNAME", "py-test")
assert a.client_getname() in (b"py-test", "py-test"), a.client_getname()
try:
    a.execute_command("HELLO", proto, "BOGUS")
    raise AssertionError("HELLO with a bad option was accepted")
except redis.ResponseError as e:
    assert "Syntax error in HELLO option 'BOGUS'" in str(e), str(e)

# SET on one node, GET on the other.
assert a.ping()
assert a.set("py:greeting", "hello") is True
assert b.get("py:greeting") == b"hello", b.get("py:greeting")
assert b.exists("py:greeting", "py:absent") == 1
assert a.delete("py:greeting") == 1
assert b.get("py:greeting") is None

# Counters across nodes; a value that is not one is Redis' error.
assert a.incr("py:n") == 1
assert b.incrby("py:n", 5) == 6
assert b.decr("py:n") == 5
assert a.decrby("py:n", 7) == -2
assert a.set("py:word", "abc") is True
try:
    b.incr("py:word")
    raise AssertionError("INCR of a word was accepted")
except redis.ResponseError as e:
    assert "not an integer" in str(e), str(e)

# SET k v EX 1, then expiry (polled, never a blind sleep).
assert a.set("py:brief", "v", ex=1) is True
assert b.get("py:brief") == b"v"
assert 0 < b.ttl("py:brief") <= 1, b.ttl("py:brief")
deadline = time.monotonic() + 10
while b.get("py:brief") is not None:
    assert time.monotonic() < deadline, "SET EX 1 never expired"
    time.sleep(0.05)

# SET's GET and KEEPTTL, EXPIRE's conditions, across nodes; Redis' errors.
assert a.set("py:g", "v", get=True) is None
assert b.set("py:g", "w", get=True) == b"v"
assert a.set("py:g", "x", nx=True, get=True) == b"w"
assert b.get("py:g") == b"w"
assert a.set("py:t", "v", ex=100) is True
assert b.set("py:t", "w", keepttl=True) is True
assert 90 <= a.ttl("py:t") <= 100, a.ttl("py:t")
assert b.expire("py:t", 200, lt=True) is False
assert b.expire("py:t", 200, gt=True) is True
assert 190 <= a.ttl("py:t") <= 200, a.ttl("py:t")
assert a.expire("py:t", 10, nx=True) is False
for args, text in [
    (("EX", 10, "PX", 100), "syntax error"),
    (("EX", 0), "invalid expire time in 'set' command"),
    (("EX", 99999999999999999), "invalid expire time in 'set' command"),
]:
    try:
        a.execute_command("SET", "py:bad", "v", *args)
        raise AssertionError(f"SET {args} was accepted")
    except redis.ResponseError as e:
        assert str(e) == text, str(e)

# redis-py's pipeline() wraps its commands in MULTI/EXEC: run in order.
pipe = a.pipeline()
pipe.set("py:p", "1").incr("py:p").get("py:p")
assert pipe.execute() == [True, 2, b"2"]
# A command refused as it is queued: nothing runs (EXECABORT).
pipe = a.pipeline()
pipe.set("py:p", "9").execute_command("GET")
try:
    pipe.execute()
    raise AssertionError("a transaction with a bad command ran")
except redis.ResponseError as e:
    assert "wrong number of arguments for 'get' command" in str(e), str(e)
assert b.get("py:p") == b"2"
# One that fails as it runs: the others still do.
pipe = a.pipeline()
pipe.set("py:p", "x").incr("py:p").get("py:p")
assert pipe.execute(raise_on_error=False)[::2] == [True, b"x"]

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
if proto == 3:
    # A second subscription on the same connection, then a message.
    p.subscribe("py-more")
    confirm = p.get_message(timeout=10)
    assert confirm and confirm["type"] == "subscribe", confirm
    a.publish("py-news", "second")
    msg = p.get_message(timeout=10)
    assert msg and msg["type"] == "message" and msg["data"] == b"second", msg
    # On the wire: RESP3 frames pushes apart from replies (`>`), so a
    # subscribed connection may still run commands; a miss is `_`.
    raw = socket.create_connection(("127.0.0.1", int(sys.argv[2])), timeout=10)
    raw.sendall(b"HELLO 3\r\nSUBSCRIBE raw\r\nGET py:absent\r\nPING\r\n")
    want = b">3\r\n$9\r\nsubscribe\r\n$3\r\nraw\r\n:1\r\n_\r\n+PONG\r\n"
    got = b""
    while not got.endswith(want):
        data = raw.recv(4096)
        assert data, got
        got += data
    assert got.startswith(b"%7\r\n"), got
    raw.close()
p.close()

# An unknown command: Redis' own error, and the connection serves on.
try:
    a.hset("py:h", "f", "v")
    raise AssertionError("HSET was accepted")
except redis.ResponseError as e:
    text = str(e)
    assert text == "unknown command 'HSET', with args beginning with: 'py:h' 'f' 'v' ", text
assert a.set("py:after", "1") is True
try:
    a.execute_command("GET")
    raise AssertionError("GET with no key was accepted")
except redis.ResponseError as e:
    assert str(e) == "wrong number of arguments for 'get' command", str(e)

# CLIENT ID: this connection's number, as HELLO reports it.
hello = a.execute_command("HELLO", proto)
if isinstance(hello, list):
    hello = dict(zip(hello[::2], hello[1::2]))
assert a.client_id() == hello[b"id"], (a.client_id(), hello)

if proto == 2:
    # UNSUBSCRIBE with nothing subscribed is still answered (in RESP3 the
    # answer is a push, which redis-py sets aside, as against Redis).
    assert a.execute_command("UNSUBSCRIBE") == [b"unsubscribe", None, 0]
    assert a.ping()
print("ok")
