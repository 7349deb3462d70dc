"""Users and rooms made directly over HTTP (shared-secret registration), for tests whose
subject is the transport rather than the Matrix flow."""

import hashlib
import hmac
import uuid


def make_user(synapse, prefix="u"):
    name = f"{prefix}{uuid.uuid4().hex[:10]}"
    _, nonce = synapse.request("GET", "/_synapse/admin/v1/register")
    if "nonce" not in nonce:
        return _register_open(synapse, name)
    password = "pw-" + name
    mac = hmac.new(synapse.shared_secret.encode(), digestmod=hashlib.sha1)
    mac.update(b"\x00".join([nonce["nonce"].encode(), name.encode(), password.encode(), b"notadmin"]))
    status, body = synapse.request("POST", "/_synapse/admin/v1/register", {
        "nonce": nonce["nonce"], "username": name, "password": password, "admin": False, "mac": mac.hexdigest()})
    assert status == 200, body
    return body


def _register_open(synapse, name):
    path = "/_matrix/client/v3/register"
    status, challenge = synapse.request("POST", path, {"username": name, "password": "pw-" + name})
    status, body = synapse.request("POST", path, {
        "username": name, "password": "pw-" + name, "auth": {"type": "m.login.dummy", "session": challenge["session"]}})
    assert status == 200, body
    return body


def make_room(synapse, token):
    status, room = synapse.request("POST", "/_matrix/client/v3/createRoom", {"preset": "private_chat"}, token=token)
    assert status == 200, room
    return room["room_id"]
