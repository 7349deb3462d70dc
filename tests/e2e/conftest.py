"""Fixtures for the end-to-end suite: a real Synapse (SQLite, loopback), the jeton-gateway and
jeton-sim tokens; the helpers live in e2e_stack.py. Every process a fixture starts is stopped by
the same fixture.
"""

import pytest

from e2e_stack import SimToken, start_gateway, stop_process, synapse_server


@pytest.fixture(scope="session")
def synapse():
    with synapse_server() as server:
        yield server


@pytest.fixture(scope="session")
def gateway(synapse):
    gw = start_gateway(synapse.base)
    yield gw
    stop_process(gw.proc)


@pytest.fixture
def tokens(tmp_path):
    """Starts tokens on demand; stops every one at the end of the test."""
    started = []

    def make(gateway_address, user, name, auto_join_from=(), extra_args=()):
        user_id, _, password = user
        token = SimToken(gateway_address, user_id, password, tmp_path / name, name, auto_join_from, extra_args)
        started.append(token)
        return token.start()

    yield make
    for token in started:
        token.stop()
