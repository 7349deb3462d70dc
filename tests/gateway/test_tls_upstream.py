"""The gateway in front of a homeserver reached over https, as in production: rustls checks the
homeserver's certificate against the system's roots (here a CA made by the test and handed to
the gateway through SSL_CERT_FILE, which rustls-native-certs reads), and a homeserver whose
certificate it cannot verify is never sent a request."""

import datetime
import ssl
import uuid

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from coap_client import GET, POST, Client, run
from conftest import RecordingProxy, start_gateway, stop
from matrix_users import make_user


def _certificate(subject, issuer, public_key, signing_key, *, ca, names=()):
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(names)), critical=False)
    return builder.sign(signing_key, hashes.SHA256())


def _pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM)


def make_pki(directory):
    """A CA, and a certificate for `localhost` it signed: (ca.pem path, server SSLContext)."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("jeton test CA", "jeton test CA", ca_key.public_key(), ca_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = _certificate("localhost", "jeton test CA", key.public_key(), ca_key, ca=False,
                        names=[x509.DNSName("localhost")])
    (directory / "ca.pem").write_bytes(_pem(ca))
    (directory / "server.pem").write_bytes(_pem(leaf))
    (directory / "server.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(directory / "server.pem", directory / "server.key")
    return directory / "ca.pem", context


def _https_front(synapse, tmp_path):
    ca, context = make_pki(tmp_path)
    front = RecordingProxy(int(synapse.base.rsplit(":", 1)[1]), tls=context)
    return ca, front


def test_a_matrix_login_through_an_https_homeserver(synapse, tmp_path, monkeypatch):
    ca, front = _https_front(synapse, tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))
    gw = start_gateway(f"https://localhost:{front.port}")
    user = make_user(synapse, "tls")
    name = user["user_id"][1:].split(":")[0]

    async def go():
        async with Client(gw) as token:
            code, versions = await token.request(GET, "/_matrix/client/versions")
            assert code == "2.05" and versions["versions"], versions
            code, login = await token.request(POST, "/_matrix/client/v3/login", {
                "type": "m.login.password", "identifier": {"type": "m.id.user", "user": name},
                "password": "pw-" + name, "initial_device_display_name": f"tls-{uuid.uuid4().hex[:6]}",
            })
            assert code == "2.04", login
            return login

    try:
        login = run(go())
        assert login["user_id"] == user["user_id"]
        status, whoami = synapse.request("GET", "/_matrix/client/v3/account/whoami", token=login["access_token"])
        assert status == 200 and whoami["device_id"] == login["device_id"]
        assert front.seen("POST", "/login"), "the login went through the https front"
    finally:
        stop(gw.proc)
        front.close()


def test_a_homeserver_certificate_the_gateway_cannot_verify_gets_no_request(synapse, tmp_path, monkeypatch):
    ca, front = _https_front(synapse, tmp_path)
    # The gateway trusts another CA only: the front's certificate does not chain to it.
    other = tmp_path / "other"
    other.mkdir()
    other_ca, _ = make_pki(other)
    monkeypatch.setenv("SSL_CERT_FILE", str(other_ca))
    gw = start_gateway(f"https://localhost:{front.port}")

    async def go():
        async with Client(gw) as token:
            return await token.request(GET, "/_matrix/client/versions")

    try:
        code, body = run(go())
        assert code == "5.02", (code, body)
        assert front.seen() == [], "no request reached a homeserver whose certificate failed"
    finally:
        stop(gw.proc)
        front.close()
