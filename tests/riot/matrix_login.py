"""The RIOT tier's Matrix part: jeton-firmware on native64 logs in to a real Synapse through
the real jeton-gateway over a tap interface and publishes its keys.

    tests/.venv/bin/python tests/riot/matrix_login.py <jeton.elf> <tap>

Synapse and the gateway start as tests/e2e starts them (tests/gateway/conftest.py, loaded
through tests/e2e/e2e_stack.py). The tap's host side gets the address HOST_ADDR (a
unique-local /64) and the gateway listens there; the firmware gets FIRMWARE_ADDR with
RIOT's `ifconfig` and the gateway's address with `gateway`. Every process it starts is
stopped before it exits, and the host address is removed again.
"""

import os
import pathlib
import re
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "e2e"))
from e2e_stack import free_port, new_user, start_gateway, stop_process, synapse_server  # noqa: E402

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

    def wait_for(self, pattern, timeout=30.0, since=0):
        deadline = time.monotonic() + timeout
        while True:
            for line in self.lines[since:]:
                if re.search(pattern, line):
                    return line
            if time.monotonic() > deadline:
                raise AssertionError(f"no firmware line matching /{pattern}/ within {timeout} s")
            self._pump(0.2)

    def stop(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()


def main(elf, tap):
    subprocess.run(["ip", "-6", "addr", "add", f"{HOST_ADDR}/64", "dev", tap, "nodad"], check=True)
    try:
        with synapse_server() as synapse:
            port = free_port(socket.SOCK_DGRAM)
            gateway = start_gateway(synapse.base, "--listen", f"[{HOST_ADDR}]:{port}")
            try:
                user_id, localpart, password = new_user(synapse, "riot")
                with tempfile.TemporaryDirectory() as work:
                    firmware = Firmware(elf, tap, pathlib.Path(work) / "flash.bin")
                    try:
                        banner = firmware.wait_for(r"^net: interface KernelPID\(\d+\)")
                        netif = re.search(r"KernelPID\((\d+)\)", banner).group(1)
                        firmware.wait_for(r"^type `help`")
                        # One line at a time: each waits for the previous one's answer.
                        mark = len(firmware.lines)
                        firmware.command(f"ifconfig {netif} add {FIRMWARE_ADDR}/64")
                        firmware.wait_for(r"^success: added", 10, mark)
                        mark = len(firmware.lines)
                        firmware.command(f"gateway {HOST_ADDR} {port}")
                        firmware.wait_for(r"^LED_RED_OFF", 10, mark)
                        mark = len(firmware.lines)
                        firmware.command("status")
                        firmware.wait_for(r"^status logged-in=false", 10, mark)
                        mark = len(firmware.lines)
                        firmware.command(f"login {localpart} {password}")
                        line = firmware.wait_for(r"^logged-in ", 60, mark)
                        assert line.split()[1] == user_id, line
                        firmware.wait_for(r"^keys-published [1-9]", 60, mark)
                        firmware.command("status")
                        firmware.wait_for(r"^status logged-in=true user=" + re.escape(user_id), 10, mark)
                        firmware.command("ps")
                        firmware.wait_for(r"\| shell ", 10, mark)
                        time.sleep(0.5)
                        firmware._pump(0.5)
                    finally:
                        firmware.stop()
            finally:
                stop_process(gateway.proc)
    finally:
        subprocess.run(["ip", "-6", "addr", "del", f"{HOST_ADDR}/64", "dev", tap], check=False)
    print("matrix: the firmware logged in through the gateway and published its keys")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
