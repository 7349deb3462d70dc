"""The RIOT tier's Matrix part: jeton-firmware on native64 logs in to a real Synapse through
the real jeton-gateway over a tap interface, publishes its keys, joins an encrypted room a
matrix-nio user invites it to, sends a message nio decrypts and decrypts nio's reply, stores a
file nio sends in its file system and sends it back after a power cut, all over the protected
link (EDHOC + OSCORE): the token is paired with `jeton pair`, its key file goes to the
firmware with the shell's `pair <hex>`, and the gateway refuses plain requests.

    tests/.venv/bin/python tests/riot/matrix_login.py <jeton.elf> <tap>

Synapse and the gateway start as tests/e2e starts them (tests/gateway/conftest.py, loaded
through tests/e2e/e2e_stack.py). The tap's host side gets the address HOST_ADDR (a
unique-local /64) and the gateway listens there; the firmware gets FIRMWARE_ADDR with
RIOT's `ifconfig` and the gateway's address with `gateway`. Every process it starts is
stopped before it exits, and the host address is removed again.
"""

import asyncio
import os
import pathlib
import random
import re
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "e2e"))
from e2e_stack import (NioPeer, free_port, http_media, new_user, nio_sends_file, pair, start_gateway,  # noqa: E402
                       stop_process, synapse_server)

HOST_ADDR = "fd00:6a65:746f:6e::1"
FIRMWARE_ADDR = "fd00:6a65:746f:6e::2"


class Firmware:
    """jeton.elf on the tap, with a fresh flash file; its shell on a pipe."""

    def __init__(self, elf, tap, flash):
        self.proc = subprocess.Popen(
            [elf, tap, f"--mtd={flash}"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, start_new_session=True)
        self.lines = []
        self._partial = b""

    def _pump(self, timeout):
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if ready:
            data = os.read(self.proc.stdout.fileno(), 65536)
            if not data:
                raise RuntimeError("the firmware exited")
            data = self._partial + data
            *complete, self._partial = data.split(b"\n")
            for line in complete:
                text = line.decode(errors="replace").rstrip("\r")
                print("firmware:", text, flush=True)
                self.lines.append(text)

    def command(self, line):
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def _match(self, pattern, since, deadline, timeout):
        """The first line since `since` matching `pattern`, None to wait on; fails after deadline."""
        for line in self.lines[since:]:
            if re.search(pattern, line):
                return line
        if time.monotonic() > deadline:
            raise AssertionError(f"no firmware line matching /{pattern}/ within {timeout} s")
        return None

    def wait_for(self, pattern, timeout=30.0, since=0):
        deadline = time.monotonic() + timeout
        while (line := self._match(pattern, since, deadline, timeout)) is None:
            self._pump(0.2)
        return line

    async def expect(self, pattern, since, timeout=60.0):
        """wait_for without blocking the event loop nio's sync task runs on."""
        deadline = time.monotonic() + timeout
        while (line := self._match(pattern, since, deadline, timeout)) is None:
            self._pump(0)
            await asyncio.sleep(0.1)
        return line

    def stop(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()


FILE_NAME = "from nio.pdf"
FILE_SIZE = 30 * 1024 + 123


async def files_both_ways(synapse, nio, room, firmware, user_id, reboot):
    """nio sends an encrypted file, which the firmware stores in its file system; after a power
    cut (the process killed) the firmware sends it back from there, and nio decrypts exactly
    what it sent. The firmware now running."""
    from nio import RoomEncryptedFile
    from nio.crypto.attachments import decrypt_attachment

    data = random.Random(17).randbytes(FILE_SIZE)
    files = []
    nio.client.add_event_callback(lambda r, e: files.append((r.room_id, e)), (RoomEncryptedFile,))
    mark = len(firmware.lines)
    await nio_sends_file(nio, room, data, FILE_NAME)
    line = await firmware.expect(r"^file-(received|failed) ", mark, 120)
    assert line == f"file-received {room} {nio.user_id} {FILE_SIZE} application/pdf {FILE_NAME}", line
    print(f"files: the firmware received nio's {FILE_SIZE} byte file into its file system", flush=True)

    firmware = reboot(firmware)
    mark = len(firmware.lines)
    firmware.command(f"sendfile {room} {FILE_NAME}")
    line = await firmware.expect(r"^(file-uploaded|file-failed|error) ", mark, 120)
    assert line == f"file-uploaded 1 {FILE_SIZE} {FILE_NAME}", line
    await firmware.expect(r"^delivered 1 ", mark)
    [event] = await nio.wait(lambda: [e for r, e in files if r == room and e.sender == user_id],
                             "the firmware's file event")
    assert event.body == FILE_NAME and event.source["content"]["info"]["mimetype"] == "application/pdf", event
    ciphertext = http_media(synapse, nio.client.access_token, event.url)
    assert decrypt_attachment(ciphertext, event.key["k"], event.hashes["sha256"], event.iv) == data
    print("files: after a power cut the firmware sent the stored file back; nio decrypted the same bytes",
          flush=True)
    return firmware


async def exchange(synapse, firmware, user_id, nio_dir, reboot):
    """A nio user invites the firmware's user to an encrypted room; the firmware joins, sends
    a message nio decrypts, decrypts nio's reply, and files go both ways
    (`files_both_ways`). The firmware now running."""
    alice = new_user(synapse, "alice")
    nio = await NioPeer.login(synapse.base, alice, nio_dir, "nio-alice")
    try:
        mark = len(firmware.lines)
        room = await nio.create_encrypted_room(invite=[user_id])
        await firmware.expect(r"^invited " + re.escape(room), mark)
        firmware.command(f"join {room}")
        await firmware.expect(r"^joined " + re.escape(room), mark)
        await nio.trust_devices_of(user_id)
        mark = len(firmware.lines)
        firmware.command("status")
        await firmware.expect(r"^status logged-in=true", mark, 20)
        mark = len(firmware.lines)
        firmware.command(f"send {room} hello from RIOT")
        await firmware.expect(r"^delivered ", mark)
        [event] = await nio.wait_for_text(room, user_id, "hello from RIOT")
        assert event.decrypted, event
        assert nio.undecrypted_from(room, user_id) == []
        mark = len(firmware.lines)
        await nio.send_text(room, "hello RIOT, from nio")
        line = await firmware.expect(r"^(message|undecryptable) " + re.escape(f"{room} {alice[0]} "), mark)
        assert line.startswith("message ") and line.endswith(" e2e hello RIOT, from nio"), line
        print("matrix: the firmware joined an encrypted room, nio decrypted its message, it decrypted nio's reply",
              flush=True)
        mark = len(firmware.lines)
        firmware.command("status")
        line = await firmware.expect(r"^status logged-in=true", mark, 10)
        assert " link=ready " in line and " link-rejected=0" in line, line
        handshake = re.search(r"link-handshake-bytes=(\d+)", line).group(1)
        print(f"link: EDHOC handshake {handshake} bytes on the air, CoAP headers included", flush=True)
        # After the power cut in there the gateway's answers to the killed firmware's requests
        # still arrive, and the new one drops them (link-rejected counts them).
        return await files_both_ways(synapse, nio, room, firmware, user_id, reboot)
    finally:
        await nio.close()


def print_ps(firmware):
    """RIOT's `ps`: the threads' stack use, printed with the firmware's other lines."""
    mark = len(firmware.lines)
    firmware.command("ps")
    firmware.wait_for(r"\| shell ", 10, mark)
    time.sleep(0.5)
    firmware._pump(0.5)


def boot(elf, tap, flash):
    """Starts the firmware on `flash` and gives it FIRMWARE_ADDR; the running Firmware."""
    firmware = Firmware(elf, tap, flash)
    try:
        banner = firmware.wait_for(r"^net: interface KernelPID\(\d+\)")
        netif = re.search(r"KernelPID\((\d+)\)", banner).group(1)
        firmware.wait_for(r"^type `help`")
        mark = len(firmware.lines)
        firmware.command(f"ifconfig {netif} add {FIRMWARE_ADDR}/64")
        firmware.wait_for(r"^success: added", 10, mark)
    except BaseException:
        firmware.stop()
        raise
    return firmware


def main(elf, tap):
    subprocess.run(["ip", "-6", "addr", "add", f"{HOST_ADDR}/64", "dev", tap, "nodad"], check=True)
    try:
        with synapse_server() as synapse, tempfile.TemporaryDirectory() as work:
            work = pathlib.Path(work)
            # `jeton pair`: the token's key file, the gateway's identity and tokens files.
            identity, tokens = work / "gateway-identity.toml", work / "gateway-tokens.toml"
            key_file = pair(work / "token.link", identity, tokens, "riot-native64")
            port = free_port(socket.SOCK_DGRAM)
            gateway = start_gateway(synapse.base, "--listen", f"[{HOST_ADDR}]:{port}",
                                    "--link-identity", str(identity), "--link-tokens", str(tokens),
                                    "--compat-plain-msc3079", "false")
            try:
                user_id, localpart, password = new_user(synapse, "riot")
                flash = work / "flash.bin"
                firmware = boot(elf, tap, flash)
                try:
                    # One line at a time: each waits for the previous one's answer.
                    mark = len(firmware.lines)
                    firmware.command(f"gateway {HOST_ADDR} {port}")
                    firmware.wait_for(r"^LED_RED_OFF", 10, mark)
                    mark = len(firmware.lines)
                    firmware.command(f"pair {key_file.read_bytes().hex()}")
                    line = firmware.wait_for(r"^(paired: |error )", 10, mark)
                    assert line.startswith("paired: "), line
                finally:
                    firmware.stop()
                # The key file is used from the next boot: the token boots with the link.
                firmware = boot(elf, tap, flash)
                try:
                    mark = len(firmware.lines)
                    firmware.command("status")
                    line = firmware.wait_for(r"^status logged-in=false", 10, mark)
                    assert " link=handshaking" in line or " link=ready" in line, line
                    mark = len(firmware.lines)
                    firmware.command(f"login {localpart} {password}")
                    firmware.wait_for(r"^link-established kid=", 60, mark)
                    line = firmware.wait_for(r"^logged-in ", 60, mark)
                    assert line.split()[1] == user_id, line
                    firmware.wait_for(r"^keys-published [1-9]", 60, mark)
                    firmware.command("status")
                    firmware.wait_for(r"^status logged-in=true user=" + re.escape(user_id), 10, mark)
                    def reboot(running):
                        # The threads' stack use so far (tests/riot/run takes the peaks), then
                        # the power cut.
                        print_ps(running)
                        running.stop()
                        return boot(elf, tap, flash)

                    firmware = asyncio.run(exchange(synapse, firmware, user_id, work / "nio", reboot))
                    mark = len(firmware.lines)
                    firmware.command("status")
                    line = firmware.wait_for(r"^status logged-in=true", 10, mark)
                    assert " link=ready " in line, line
                    print_ps(firmware)
                finally:
                    firmware.stop()
            finally:
                stop_process(gateway.proc)
            gateway.proc.log.seek(0)
            gateway_log = gateway.proc.log.read().decode(errors="replace")
            # Neither a plain request carrying option 256 nor any EDHOC or OSCORE message.
            assert "refused" not in gateway_log, gateway_log
            print("link: the gateway refused no request (no plain request carried an access token)",
                  flush=True)
    finally:
        subprocess.run(["ip", "-6", "addr", "del", f"{HOST_ADDR}/64", "dev", tap], check=False)
    print("matrix: the firmware logged in through the gateway over the protected link and published its keys")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
