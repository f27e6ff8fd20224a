"""TLS: a private CA, a server certificate for localhost, and clients that do and don't trust it."""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
import multiprocessing
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sandbox import TLS, Client, Project, Role, Unavailable
from sandbox._config import load_config
from sandbox.audit import AuditLog
from sandbox.server import RunningServer, start_server
from sandbox.server._serve import ProcessSlot
from sandbox.state import Principals
from tests.conftest import PUMS_DIR, pums_policy
from tests.integration.test_processes import _free_ports, client_ports


# ---- a tiny PKI -------------------------------------------------------------------------------
@dataclass
class Issuer:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(cn: str) -> Issuer:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issuer(key, cert)


def issue(
    ca: Issuer,
    cn: str,
    *,
    server: bool,
    subject: x509.Name | None = None,
    valid: tuple[dt.datetime, dt.datetime] | None = None,
) -> Issuer:
    """A certificate signed by ``ca`` for CN ``cn`` (or the full ``subject``), valid from five
    minutes ago for a day unless ``valid`` gives (not before, not after)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    not_before, not_after = valid or (now - dt.timedelta(minutes=5), now + dt.timedelta(days=1))
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject or _name(cn))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return Issuer(key, builder.sign(ca.key, hashes.SHA256()))


def write_pem(directory: Path, stem: str, pair: Issuer) -> tuple[Path, Path]:
    cert = directory / f"{stem}.pem"
    key = directory / f"{stem}.key"
    cert.write_bytes(pair.cert.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        pair.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert, key


# ---- a TLS world ------------------------------------------------------------------------------
@dataclass
class TLSWorld:
    root: Path
    server: RunningServer
    ca: Path
    tokens: dict[str, str]
    pki: Path
    clients: list[Client] = field(default_factory=list)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def client(self, name: str | None, tls: TLS | bool | None, timeout: float = 10) -> Client:
        token = self.tokens[name] if name else None
        c = Client(self.target, token=token, tls=tls, timeout=timeout)
        self.clients.append(c)
        return c


def build_world(root: Path, *, mutual: bool) -> TLSWorld:
    pki = root / "pki"
    for d in ("data", "policies", "pki"):
        (root / d).mkdir(parents=True)
    ca = make_ca("Sandbox Test CA")
    ca_cert, _ = write_pem(pki, "ca", ca)
    write_pem(pki, "server", issue(ca, "localhost", server=True))
    shutil.copy(PUMS_DIR / "PUMS_pid.csv", root / "data" / "pums.csv")
    (root / "policies" / "pums.yaml").write_text(pums_policy("pums", "pums.csv"))
    text = (
        "[server]\n"
        'listen = "127.0.0.1:0"\n'
        'state_dir = "state"\ndata_root = "data"\npolicy_dir = "policies"\n'
        "grace_period_s = 1\n"
        "\n[server.tls]\n"
        'cert = "pki/server.pem"\nkey = "pki/server.key"\n'
    )
    if mutual:
        text += 'client_ca = "pki/ca.pem"\n'
    (root / "sandbox.toml").write_text(text)
    config = load_config(root / "sandbox.toml", {})
    assert config.tls is not None and config.tls.cert == (pki / "server.pem").resolve()
    server = start_server(config)
    tokens: dict[str, str] = {}
    db = server.app.db
    with db.write() as conn:
        for name, role in (("sam", Role.STEWARD), ("ana", Role.RESEARCHER)):
            tokens[name] = Principals(db).add(conn, name, role)
            AuditLog(db).append(conn, "principal.added", actor="test", principal=name)
    return TLSWorld(root, server, ca_cert, tokens, pki)


@pytest.fixture
def tls_world_factory(tmp_path: Path) -> Iterator[Callable[..., TLSWorld]]:
    worlds: list[TLSWorld] = []

    def make(mutual: bool = False) -> TLSWorld:
        worlds.append(build_world(tmp_path / f"tls{len(worlds)}", mutual=mutual))
        return worlds[-1]

    yield make
    for w in worlds:
        for c in w.clients:
            c.close()
        w.server.stop(grace=1)


def run_job(sam: Client, ana: Client) -> float:
    sam.register_dataset("pums")
    sam.create_project(
        Project("p1", "p1", ("ana",), (("pums", "research"),), dt.date.today() + dt.timedelta(30))
    )
    result = ana.sql(
        "SELECT sex, COUNT(*) AS n FROM pums GROUP BY sex", project="p1", purpose="research"
    )
    return float(sum(result.to_dataframe()["n"]))


# ---- tests ------------------------------------------------------------------------------------
def test_tls_client_trusting_the_ca_runs_a_job(tls_world_factory) -> None:
    world = tls_world_factory()
    tls = TLS(ca=world.ca, server_name="localhost")
    assert run_job(world.client("sam", tls), world.client("ana", tls)) == 1000
    # The certificate's IP SAN also matches a connection by address without an override.
    assert [d.id for d in world.client("ana", TLS(ca=world.ca)).datasets()] == ["pums"]


def test_plaintext_client_to_tls_port_is_unavailable(tls_world_factory) -> None:
    world = tls_world_factory()
    with pytest.raises(Unavailable):
        world.client("ana", None, timeout=5).datasets()
    # The server is unaffected.
    tls = TLS(ca=world.ca, server_name="localhost")
    assert world.client("sam", tls).datasets() == []


def test_client_trusting_another_ca_is_unavailable(tls_world_factory) -> None:
    world = tls_world_factory()
    other = world.pki / "other"
    other.mkdir()
    other_ca, _ = write_pem(other, "ca", make_ca("Sandbox Test CA"))  # same name, other key
    with pytest.raises(Unavailable):
        world.client("ana", TLS(ca=other_ca, server_name="localhost"), timeout=5).datasets()
    # Asking for a name the certificate does not hold fails too.
    with pytest.raises(Unavailable):
        world.client("ana", TLS(ca=world.ca, server_name="sandbox.example"), timeout=5).datasets()
    assert world.client("sam", TLS(ca=world.ca, server_name="localhost")).datasets() == []


def load_issuer(cert: Path, key: Path) -> Issuer:
    ca_key = serialization.load_pem_private_key(key.read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    return Issuer(ca_key, x509.load_pem_x509_certificate(cert.read_bytes()))


def test_mutual_tls_requires_a_client_certificate(tls_world_factory) -> None:
    world = tls_world_factory(mutual=True)
    ca = load_issuer(world.ca, world.pki / "ca.key")
    cert, key = write_pem(world.pki, "client", issue(ca, "ana", server=False))
    sam_cert, sam_key = write_pem(world.pki, "sam", issue(ca, "sam", server=False))
    db = world.server.app.db
    with db.write() as conn:  # each certificate subject names its principal
        Principals(db).map_cert(conn, "ana", "CN=ana")
        Principals(db).map_cert(conn, "sam", "CN=sam")
    with pytest.raises(Unavailable):
        world.client("ana", TLS(ca=world.ca, server_name="localhost"), timeout=5).datasets()
    stranger_ca = make_ca("Stranger CA")
    s_cert, s_key = write_pem(world.pki, "stranger", issue(stranger_ca, "ana", server=False))
    with pytest.raises(Unavailable):
        world.client(
            "ana", TLS(ca=world.ca, cert=s_cert, key=s_key, server_name="localhost"), timeout=5
        ).datasets()
    tls = TLS(ca=world.ca, cert=cert, key=key, server_name="localhost")
    sam_tls = TLS(ca=world.ca, cert=sam_cert, key=sam_key, server_name="localhost")
    assert run_job(world.client("sam", sam_tls), world.client("ana", tls)) == 1000


def test_a_process_port_serves_tls_only_and_a_tls_client_moves_there(tls_world_factory) -> None:
    world = tls_world_factory()
    tls = TLS(ca=world.ca, server_name="localhost")
    assert run_job(world.client("sam", tls), world.client("ana", tls)) == 1000
    # One process of a two-process server on the same state, with process ports.
    shared, own = _free_ports(1), _free_ports(2)
    config = dataclasses.replace(
        world.server.app.config,
        listen=f"127.0.0.1:{shared}",
        processes=2,
        process_port_base=own,
    )
    turns = multiprocessing.get_context("spawn").Value("Q", 0)
    process = start_server(config, recover=False, reuse_port=True, slot=ProcessSlot(0, turns))
    try:
        with Client(f"127.0.0.1:{shared}", token=world.tokens["ana"], tls=tls) as ana:
            for _ in range(2):
                got = ana.sql("SELECT COUNT(*) AS n FROM pums", project="p1", purpose="research")
                assert got.to_dataframe()["n"].sum() == 1000
            assert len(client_ports(own)) == 1  # moved to the process port, over TLS
        with (
            Client(f"127.0.0.1:{own}", token=world.tokens["ana"], timeout=5) as plain,
            pytest.raises(Unavailable),
        ):
            plain.datasets()  # the process port speaks TLS only, like the shared one
    finally:
        process.stop(grace=1)
