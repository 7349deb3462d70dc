"""The end-to-end fixtures: a real Synapse (SQLite, loopback), the jeton-gateway and jeton-sim
tokens; the helpers live in e2e_stack.py. Every suite that runs the stack imports them into its
conftest.py (tests/e2e with matrix-nio, tests/element with matrix-js-sdk). Every process a fixture
starts is stopped by the same fixture.
"""

import pytest

from e2e_stack import LinkPairing, SimToken, plain_link, start_gateway, stop_process, synapse_server


@pytest.fixture(scope="session")
def synapse():
    with synapse_server() as server:
        yield server


@pytest.fixture(scope="session")
def link_pairing(tmp_path_factory):
    """The gateway's link identity and tokens paired with it (None: the suite runs plain)."""
    return None if plain_link() else LinkPairing(tmp_path_factory.mktemp("link"))


@pytest.fixture(scope="session")
def gateway(synapse, link_pairing):
    gw = start_gateway(synapse.base, *(link_pairing.gateway_args() if link_pairing else ()))
    yield gw
    stop_process(gw.proc)


@pytest.fixture
def tokens(tmp_path, link_pairing):
    """Starts tokens on demand, paired with the gateway unless the suite runs plain or
    `link=False`; stops every one at the end of the test."""
    started = []

    def make(gateway_address, user, name, auto_join_from=(), extra_args=(), link=True):
        user_id, _, password = user
        if link is True:
            material = link_pairing.take() if link_pairing else None
        else:
            material = link or None
        token = SimToken(gateway_address, user_id, password, tmp_path / name, name, auto_join_from, extra_args,
                         material)
        started.append(token)
        return token.start()

    yield make
    for token in started:
        token.stop()
