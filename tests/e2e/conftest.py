"""The end-to-end suite with matrix-nio peers: its fixtures are the stack's (e2e_fixtures.py)."""

from e2e_fixtures import gateway, link_pairing, synapse, tokens  # noqa: F401 (pytest finds fixtures by name)
