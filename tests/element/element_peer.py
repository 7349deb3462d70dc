"""Element's crypto engine as a test peer: one `node driver.mjs` process per simulated Element
device (matrix-js-sdk with its Rust crypto, installed by tests/setup under tests/element), driven
over JSON lines. The driver's protocol is described at the top of driver.mjs.
"""

import itertools
import json
import pathlib
import subprocess
import threading
import time

HERE = pathlib.Path(__file__).resolve().parent
NODE = HERE / "node_modules" / ".bin" / "node"
DRIVER = HERE / "driver.mjs"


class ElementError(AssertionError):
    pass


class ElementDevice:
    """One Element device. `events` keeps every event the driver reported, in order; for the
    timeline, `timeline()` gives each event's latest state (an undecryptable event may turn
    decrypted when its key arrives late)."""

    def __init__(self, name, log_path):
        self.name = name
        self.log_path = pathlib.Path(log_path)
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([str(NODE), str(DRIVER)], cwd=HERE, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.log, text=True, bufsize=1)
        self.cond = threading.Condition()
        self.events = []
        self.replies = {}
        self.ids = itertools.count(1)
        self.user_id = self.device_id = self.ed25519 = self.curve25519 = self.crypto_version = None
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            message = json.loads(line)
            with self.cond:
                if "event" in message:
                    self.events.append(message)
                else:
                    self.replies[message["id"]] = message
                self.cond.notify_all()

    def call(self, cmd, timeout=90.0, **args):
        """Runs a driver command and returns its result; a failed command raises."""
        id_ = next(self.ids)
        self.proc.stdin.write(json.dumps({"id": id_, "cmd": cmd, **args}) + "\n")
        self.proc.stdin.flush()
        deadline = time.monotonic() + timeout
        with self.cond:
            while id_ not in self.replies:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.proc.poll() is not None:
                    raise ElementError(f"{self.name}: {cmd} did not answer in {timeout}s "
                                       f"(exit code {self.proc.poll()}); log: {self.log_tail()}")
                self.cond.wait(min(remaining, 0.2))
            reply = self.replies.pop(id_)
        if not reply["ok"]:
            raise ElementError(f"{self.name}: {cmd} failed: {reply['error']}")
        return reply["result"]

    def mark(self):
        with self.cond:
            return len(self.events)

    def wait_event(self, predicate, what, since=0, timeout=60.0):
        """The first event after index `since` for which `predicate` holds."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for event in self.events[since:]:
                    if predicate(event):
                        return event
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ElementError(f"{self.name}: timed out after {timeout}s waiting for {what}; "
                                       f"last events: {self.events[-10:]}")
                self.cond.wait(min(remaining, 0.2))

    def wait_until(self, check, what, timeout=60.0):
        """Polls `check()` (which may call the driver) until it returns something true."""
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                raise ElementError(f"{self.name}: timed out after {timeout}s waiting for {what}")
            time.sleep(0.2)

    # -- the session -------------------------------------------------------------------------

    def login(self, homeserver, user):
        user_id, localpart, password = user
        result = self.call("login", homeserver=homeserver, user=localpart, password=password,
                           device_name=self.name)
        self.user_id, self.device_id, self.ed25519 = result["user_id"], result["device_id"], result["ed25519"]
        self.curve25519, self.crypto_version = result["curve25519"], result["crypto_version"]
        return self

    # -- rooms and the timeline --------------------------------------------------------------

    def create_encrypted_room(self, invite=()):
        return self.call("create_room", invite=list(invite))["room_id"]

    def send_text(self, room, body):
        return self.call("send_text", room=room, body=body)["event_id"]

    def wait_member(self, room, user, membership="join", timeout=60.0):
        self.call("wait_member", timeout=timeout + 5, room=room, user=user, membership=membership,
                  timeout_ms=int(timeout * 1000))

    def timeline(self, room, sender=None):
        """Each timeline event's latest state, in the order they first appeared."""
        latest = {}
        with self.cond:
            for event in self.events:
                if event["event"] == "timeline" and event["room"] == room and \
                        (sender is None or event["sender"] == sender):
                    latest[event["event_id"]] = event
        return list(latest.values())

    def texts(self, room, sender):
        """The decrypted bodies of `sender`'s messages, in timeline order."""
        return [e["body"] for e in self.timeline(room, sender)
                if e["type"] == "m.room.message" and e["failure"] is None]

    def undecryptable(self, room, sender):
        return [e for e in self.timeline(room, sender) if e["failure"] is not None]

    def wait_texts(self, room, sender, bodies, timeout=60.0):
        """Waits until every body in `bodies` was decrypted from `sender`; returns the timeline
        events that carry them."""
        bodies = list(bodies)
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                found = {e["body"]: e for e in self.timeline(room, sender)
                         if e["type"] == "m.room.message" and e["failure"] is None}
                if all(b in found for b in bodies):
                    return [found[b] for b in bodies]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    missing = [b for b in bodies if b not in found]
                    raise ElementError(f"{self.name}: {missing} from {sender} not decrypted in {timeout}s; "
                                       f"timeline: {self.timeline(room, sender)}")
                self.cond.wait(min(remaining, 0.2))

    def shield(self, room, event_id):
        """(colour, reason) of the shield Element draws next to the event."""
        result = self.call("shield", room=room, event_id=event_id)
        return result["colour"], result["reason"]

    # -- trust ---------------------------------------------------------------------------------

    def wait_device(self, user, device, timeout=60.0):
        self.wait_until(lambda: device in self.call("devices", user=user)["devices"],
                        f"device {device} of {user}", timeout)

    def device_status(self, user, device):
        return self.call("device_status", user=user, device=device)

    # -- verification --------------------------------------------------------------------------

    def phase(self, rid, phase, since=0, timeout=60.0):
        return self.wait_event(lambda e: e["event"] == "verification_phase" and e["rid"] == rid
                               and e["phase"] == phase, f"request {rid} in phase {phase}", since, timeout)

    def sas(self, rid, since=0, timeout=60.0):
        """The decimals Element shows for request `rid`, as 'a b c'."""
        event = self.wait_event(lambda e: e["event"] == "sas" and e["rid"] == rid,
                                f"the short authentication string of request {rid}", since, timeout)
        return " ".join(str(d) for d in event["decimals"])

    def close(self):
        if self.proc.poll() is None:
            try:
                self.call("quit", timeout=10)
            except (ElementError, OSError, ValueError):
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def log_tail(self, chars=3000):
        try:
            return self.log_path.read_bytes()[-chars:].decode(errors="replace")
        except OSError:
            return ""
