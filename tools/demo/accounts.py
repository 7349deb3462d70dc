"""Prepares the demo homeserver: registers the token's account and a second account for a
person (shared-secret registration), then, as the token's account, creates an end-to-end
encrypted room and invites the person. Prints the result as shell assignments.

Usage: accounts.py HOMESERVER_URL SHARED_SECRET TOKEN_USER GUEST_USER
Standard library only, so it runs with any Python 3.
"""

import hashlib
import hmac
import json
import secrets
import sys
import urllib.error
import urllib.parse
import urllib.request


def request(base, method, path, body=None, token=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            return json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as e:
        sys.exit(f"{method} {path}: {e.code} {e.read().decode(errors='replace')}")


def register(base, shared_secret, name):
    password = secrets.token_urlsafe(12)
    nonce = request(base, "GET", "/_synapse/admin/v1/register")["nonce"]
    mac = hmac.new(shared_secret.encode(), digestmod=hashlib.sha1)
    mac.update(b"\x00".join([nonce.encode(), name.encode(), password.encode(), b"notadmin"]))
    body = request(base, "POST", "/_synapse/admin/v1/register", {
        "nonce": nonce, "username": name, "password": password, "admin": False, "mac": mac.hexdigest()})
    return body["user_id"], password, body["access_token"]


def main():
    base, shared_secret, token_name, guest_name = sys.argv[1:5]
    token_user, token_password, access = register(base, shared_secret, token_name)
    guest_user, guest_password, guest_access = register(base, shared_secret, guest_name)
    room = request(base, "POST", "/_matrix/client/v3/createRoom", {
        "name": "jeton demo", "preset": "private_chat", "invite": [guest_user],
        "initial_state": [{"type": "m.room.encryption", "state_key": "",
                           "content": {"algorithm": "m.megolm.v1.aes-sha2"}}]}, token=access)["room_id"]
    # Registration logged both accounts in; those sessions are not devices anyone uses, so
    # they go (the token logs in as its own device, the person from their client).
    request(base, "POST", "/_matrix/client/v3/logout", {}, token=access)
    request(base, "POST", "/_matrix/client/v3/logout", {}, token=guest_access)
    for key, value in [("token_user", token_user), ("token_password", token_password),
                       ("guest_user", guest_user), ("guest_password", guest_password), ("room_id", room)]:
        print(f"{key}='{value}'")


if __name__ == "__main__":
    main()
