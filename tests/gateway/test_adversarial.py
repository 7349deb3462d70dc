"""The gateway under a flood from forged-looking sources (issue 15), on loopback only.

A client at 127.0.0.1 (a network the gateway is told to vouch for) asks for
`/_matrix/client/versions` ten times a second while a flood generator sends, from 200 other
loopback addresses the gateway has never seen prove themselves, a mix of duplicates, EDHOC
message_1, random paths, Block1 starts and garbage at a fixed rate. The test prints and asserts:
every client request is answered, its round trip p99 during the flood is printed beside the one
without (target 3x; asserted within 10x), the gateway's RSS stays within its memory budget
(`--memory-budget`, small here) of where it started, and the flood addresses get back at most
three times the bytes they sent.
"""

import os
import random
import socket
import stat
import tempfile
import time

import aiocoap
import cbor2
from aiocoap import Message
from aiocoap.edhoc import CoseKeyForEdhoc

from coap_client import GET, encode, message
from conftest import start_gateway, stop
from fake_homeserver import FakeHomeserver
from flood import FLOOD_SOURCES, Flood, p99, rss_bytes

FLOOD_SECONDS = 60
CLIENT_INTERVAL = 0.1
MEMORY_BUDGET = 8 * 1024 * 1024


def write_link_files(workdir):
    """A gateway identity and a tokens file (the link on, so message_1 reaches EDHOC)."""
    def ccs_hex(ccs):
        return cbor2.dumps(ccs, canonical=True).hex()
    gateway, token = CoseKeyForEdhoc.generate(), CoseKeyForEdhoc.generate()
    identity = os.path.join(workdir, "identity.toml")
    with open(identity, "w") as f:
        f.write(f'private_key = "{gateway.d.hex()}"\n'
                f'credential = "{ccs_hex(gateway.as_ccs(b"G", "gateway")[14])}"\n')
    os.chmod(identity, stat.S_IRUSR | stat.S_IWUSR)
    tokens = os.path.join(workdir, "tokens.toml")
    with open(tokens, "w") as f:
        f.write(f'[[token]]\nname = "t"\ncredential = "{ccs_hex(token.as_ccs(b"T", "t")[14])}"\n')
    return identity, tokens


def round_trips(gateway, seconds):
    """The client's round trips (seconds) for `seconds` of requests, and how many got no answer."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    times, lost, mid = [], 0, random.randrange(1 << 16)
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            mid = (mid + 1) % (1 << 16)
            request = encode(message(GET, "/_matrix/client/versions", mtype=aiocoap.CON), mid=mid, token=b"\x0c")
            start = time.monotonic()
            sock.sendto(request, gateway.address)
            try:
                while Message.decode(sock.recv(65535)).mid != mid:
                    pass
                times.append(time.monotonic() - start)
            except socket.timeout:
                lost += 1
            time.sleep(max(0.0, CLIENT_INTERVAL - (time.monotonic() - start)))
    finally:
        sock.close()
    return sorted(times), lost


def test_a_flood_from_unproven_addresses_neither_amplifies_nor_slows_a_real_client():
    upstream = FakeHomeserver(body={"versions": ["v1.11"]})
    workdir = tempfile.mkdtemp(prefix="jeton-flood-")
    identity, tokens = write_link_files(workdir)
    gw = start_gateway(upstream.url, "--validated-prefixes", "127.0.0.1/32",
                       "--link-identity", identity, "--link-tokens", tokens,
                       "--compat-plain-msc3079", "false",
                       "--peer-rate", "20", "--peer-burst", "50",
                       "--memory-budget", str(MEMORY_BUDGET))
    flood = None
    try:
        quiet, quiet_lost = round_trips(gw, 10)
        rss_before = rss_bytes(gw.proc.pid)
        flood = Flood(gw.address)
        flood.start()
        loud, loud_lost = round_trips(gw, FLOOD_SECONDS)
        rss_flood = rss_bytes(gw.proc.pid)
        flood.finish()
        challenges = gw.metric("jeton_gateway_echo_challenges")
        alive = gw.proc.poll() is None
    finally:
        stop(gw.proc)
        upstream.close()
        if flood:
            flood.finish()

    print(f"\nflood: {flood.report(FLOOD_SECONDS)}, {challenges:.0f} Echo challenges")
    print(f"client p99: {p99(quiet) * 1000:.1f} ms without the flood ({len(quiet)} requests), "
          f"{p99(loud) * 1000:.1f} ms with it ({len(loud)} requests, {loud_lost} unanswered)")
    print(f"gateway RSS: {rss_before / 2**20:.1f} MiB before, {rss_flood / 2**20:.1f} MiB under the flood "
          f"(memory budget {MEMORY_BUDGET / 2**20:.0f} MiB)")
    assert alive
    assert quiet_lost == 0 and loud_lost == 0, "every client request is answered"
    # A floor of 5 ms: below it the figure is this Python process's own scheduling noise.
    # The 3x target is a figure printed above; on a shared CI machine the quiet baseline is noisy,
    # so the assertion only guards against a flood that stalls the client.
    assert p99(loud) <= 10 * max(p99(quiet), 0.005), "the flood stalls the client"
    assert flood.received <= 3 * flood.sent, "no amplification towards unproven addresses"
    assert rss_flood - rss_before <= MEMORY_BUDGET, "memory within the budget"
