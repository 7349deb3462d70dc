"""The end-to-end suite with Element's crypto engine (matrix-js-sdk and its Rust crypto) as the
person's client: the stack's fixtures come from tests/e2e (e2e_fixtures.py, e2e_stack.py), the
Element devices from element_peer.py."""

import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "e2e"))

from e2e_fixtures import gateway, link_pairing, synapse, tokens  # noqa: E402,F401 (fixtures by name)
from element_peer import NODE, ElementDevice  # noqa: E402


@pytest.fixture
def element(synapse, tmp_path):
    """Logs Element devices in on demand: `element(user, name)`; closes every one at the end of
    the test."""
    if not NODE.exists():
        pytest.fail(f"{NODE} is missing: run tests/setup (it installs node 22 and matrix-js-sdk from npm)")
    devices = []

    def make(user, name):
        device = ElementDevice(name, tmp_path / f"{name}.log")
        devices.append(device)
        return device.login(synapse.base, user)

    yield make
    for device in devices:
        device.close()
