"""A flood generator for the adversarial tests (issue 15): from many loopback addresses the
gateway has not seen prove themselves, a mix of duplicates, EDHOC message_1, random paths,
Block1 starts and garbage at a fixed rate; it counts the bytes it sent and got back. Used by
tests/gateway/test_adversarial.py and tests/e2e (loaded by path there)."""

import multiprocessing
import os
import random
import select
import socket
import time

import aiocoap
from aiocoap import Code, Message
from aiocoap.optiontypes import BlockOption

FLOOD_RATE = 1000  # datagrams per second, all sources together
FLOOD_SOURCES = 200


def coap(code, path, mid, token, payload=b"", block1=None):
    msg = Message(code=code, payload=payload)
    msg.mtype, msg.mid, msg.token = aiocoap.CON, mid, token
    msg.opt.uri_path = tuple(s for s in path.split("/") if s)
    if block1 is not None:
        msg.opt.block1 = block1
    return msg.encode()


DUPLICATE = coap(Code.GET, "/0", 77, b"")


def flood_datagram(rng, kind):
    """A datagram of one of five kinds: a duplicate (the same 6 bytes every time), EDHOC
    message_1, a random path, a Block1 start, garbage; each but the first made afresh."""
    mid = rng.randrange(1 << 16)
    if kind == 0:
        return DUPLICATE
    if kind == 1:
        return coap(Code.POST, "/.well-known/edhoc", mid, b"\x01", b"\xf5" + rng.randbytes(37))
    if kind == 2:
        word = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(8))
        return coap(Code.GET, f"/_matrix/client/v3/{word}", mid, b"\x02")
    if kind == 3:
        return coap(Code.POST, "/_matrix/client/v3/keys/upload", mid, b"\x03", rng.randbytes(1024),
                    BlockOption.BlockwiseTuple(0, True, 6))
    return rng.randbytes(rng.randrange(1, 64))


class Flood:
    """Sends FLOOD_RATE datagrams a second from FLOOD_SOURCES loopback addresses, and counts
    the bytes it sent and got back. It runs in a process of its own, so that it does not slow
    the test's own client through the interpreter lock; `start()`, then `finish()`."""

    def __init__(self, gateway_address):
        context = multiprocessing.get_context("fork")
        self.stop = context.Event()
        self.counts = context.Array("q", 3)  # datagrams, bytes sent, bytes received
        self.process = context.Process(target=_run, args=(gateway_address, self.stop, self.counts), daemon=True)

    def start(self):
        self.process.start()

    def finish(self, timeout=30):
        self.stop.set()
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.kill()

    @property
    def datagrams(self):
        return self.counts[0]

    @property
    def sent(self):
        return self.counts[1]

    @property
    def received(self):
        return self.counts[2]

    def report(self, seconds):
        return (f"{self.datagrams} datagrams from {FLOOD_SOURCES} addresses in {seconds} s, {self.sent} B in, "
                f"{self.received} B back ({self.received / max(1, self.sent):.2f}x)")


def _run(gateway, stop, counts):
    sockets = []
    for i in range(FLOOD_SOURCES):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((f"127.0.{1 + i // 250}.{1 + i % 250}", 0))
        s.setblocking(False)
        sockets.append(s)
    rng = random.Random(15)
    datagrams = sent = received = 0
    start = time.monotonic()
    while not stop.is_set():
        due = int((time.monotonic() - start) * FLOOD_RATE)
        while datagrams < due:
            datagram = flood_datagram(rng, datagrams % 5)
            sockets[datagrams % len(sockets)].sendto(datagram, gateway)
            sent += len(datagram)
            datagrams += 1
        received += _drain(sockets, 0.002)
        counts[:] = [datagrams, sent, received]
    received += _drain(sockets, 1.0)
    counts[:] = [datagrams, sent, received]
    for s in sockets:
        s.close()


def _drain(sockets, timeout):
    """Bytes that arrive on `sockets` until none has for `timeout` seconds."""
    received, deadline = 0, time.monotonic() + timeout
    while True:
        readable, _, _ = select.select(sockets, [], [], max(0.0, deadline - time.monotonic()))
        if not readable:
            return received
        for s in readable:
            try:
                while True:
                    received += len(s.recv(65535))
            except BlockingIOError:
                pass


def p99(times):
    """The 99th percentile of `times`."""
    times = sorted(times)
    return times[min(len(times) - 1, int(len(times) * 0.99))]


def rss_bytes(pid):
    """The resident set size of process `pid` (Linux)."""
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
