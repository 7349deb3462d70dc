"""jeton-sim's shell at a terminal, as a person meets it: a prompt, `help <command>`, the up
arrow bringing back the last line, a password kept out of the history, and Ctrl-D ending the
shell with exit status 0. Driven through a pseudo-terminal; no gateway is needed for these."""

import os
import pty
import select
import subprocess
import time

from e2e_stack import build_sim, free_port

UP = b"\x1b[A"
CTRL_D = b"\x04"


class Terminal:
    """jeton-sim on the slave side of a pseudo-terminal; the test types on the master."""

    def __init__(self, state_dir):
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen(
            [str(build_sim()), "--gateway", f"127.0.0.1:{free_port()}", "--plain-coap-in-clear",
             "--state-dir", str(state_dir)],
            stdin=slave, stdout=slave, stderr=slave, close_fds=True,
            env={**os.environ, "TERM": "xterm"})
        os.close(slave)
        self.screen = b""

    def type(self, keys):
        os.write(self.master, keys)

    def wait_for(self, text, timeout=10.0):
        """Reads the screen until `text` appears after what was already seen; returns what came."""
        start = len(self.screen)
        deadline = time.monotonic() + timeout
        while text.encode() not in self.screen[start:]:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{text!r} never appeared; the screen: {self.screen[start:]!r}")
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    self.screen += os.read(self.master, 4096)
                except OSError:  # the process ended and the terminal closed
                    break
        return self.screen[start:].decode(errors="replace")

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        os.close(self.master)


def test_the_shell_prompts_explains_a_command_recalls_lines_and_ends_on_ctrl_d(tmp_path):
    term = Terminal(tmp_path / "state")
    try:
        term.wait_for("jeton> ")
        term.type(b"help send\r")
        shown = term.wait_for("its number in `rooms`")
        assert "usage: send <room> <text>" in shown, shown

        # The up arrow brings `help send` back; Enter runs it again.
        term.type(UP + b"\r")
        assert "usage: send <room> <text>" in term.wait_for("its number in `rooms`")

        # A login with its password is not kept: the up arrow skips it.
        term.type(b"login someone hunter2\r")
        term.wait_for("hunter2")
        term.type(UP)
        recalled = term.wait_for("help send")
        assert "hunter2" not in recalled, recalled
        term.type(b"\x15")  # Ctrl-U: the recalled line is dropped, not run

        term.type(CTRL_D)
        assert term.proc.wait(timeout=10) == 0
    finally:
        term.close()
