"""Mutual TLS maps a verified client certificate to a principal; plaintext tokens are refused.

A private CA minted per test (``cryptography``), a real server on a loopback port with
``[server.tls] client_ca`` set, and real clients. The certificate subject, as gRPC reports it
(OpenSSL's RFC 2253 rendering), names the principal through ``principals.cert_subject``; the
role always comes from the state store.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from click.testing import CliRunner, Result
from cryptography import x509
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sandbox import (
    TLS,
    Client,
    PermissionDenied,
    Project,
    Unauthenticated,
    Unavailable,
)
from sandbox.audit import AuditLog
from sandbox.cli import main as cli_main
from sandbox.state import Principals
from tests.conftest import PUMS_DIR, World, pums_policy
from tests.integration.test_tls import (
    Issuer,
    TLSWorld,
    build_world,
    issue,
    load_issuer,
    make_ca,
    write_pem,
)

ANA_SUBJECT = x509.Name(
    [
        x509.NameAttribute(NameOID.COUNTRY_NAME, "NL"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "City of Example"),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Health Research"),
        x509.NameAttribute(NameOID.COMMON_NAME, "ana"),
    ]
)
ANA_DN = "CN=ana,OU=Health Research,O=City of Example,C=NL"  # most specific first
SQL = "SELECT sex, COUNT(*) AS n FROM pums GROUP BY sex"


@dataclass
class MTLS:
    world: TLSWorld
    ca: Issuer

    def credentials(
        self, stem: str, cn: str, *, issuer: Issuer | None = None, **kwargs: object
    ) -> TLS:
        """A client certificate for ``cn`` from the world's CA (or ``issuer``)."""
        pair = issue(issuer or self.ca, cn, server=False, **kwargs)  # type: ignore[arg-type]
        cert, key = write_pem(self.world.pki, stem, pair)
        return TLS(ca=self.world.ca, cert=cert, key=key, server_name="localhost")

    def client(self, tls: TLS, token_of: str | None = None) -> Client:
        return self.world.client(token_of, tls, timeout=5)

    def map(self, name: str, subject: str) -> None:
        db = self.world.server.app.db
        with db.write() as conn:
            Principals(db).map_cert(conn, name, subject)


@pytest.fixture
def mtls(tmp_path: Path) -> Iterator[MTLS]:
    world = build_world(tmp_path / "mtls", mutual=True)
    try:
        env = MTLS(world, load_issuer(world.ca, world.pki / "ca.key"))
        env.map("ana", ANA_DN)
        env.map("sam", "CN=sam")
        yield env
    finally:
        for c in world.clients:
            c.close()
        world.server.stop(grace=1)


def setup_project(sam: Client) -> None:
    sam.register_dataset("pums")
    sam.create_project(
        Project("p1", "p1", ("ana",), (("pums", "research"),), dt.date.today() + dt.timedelta(30))
    )


# ---- success -------------------------------------------------------------------------------------
def test_a_certificate_alone_authenticates_as_its_mapped_principal(mtls: MTLS) -> None:
    sam = mtls.client(mtls.credentials("sam", "sam"))
    ana = mtls.client(mtls.credentials("ana", "ana", subject=ANA_SUBJECT))
    setup_project(sam)  # no token anywhere: the certificate names sam, a steward
    result = ana.sql(SQL, project="p1", purpose="research")
    assert sum(result.to_dataframe()["n"]) == 1000
    # The job is ana's, and ana's role (researcher, from the state store) applies.
    assert ana.jobs()[0].principal == "ana"
    with pytest.raises(PermissionDenied):
        ana.register_dataset("pums")
    with pytest.raises(PermissionDenied):
        ana.audit_entries()


def test_a_token_sent_with_the_certificate_must_name_the_same_principal(mtls: MTLS) -> None:
    ana_tls = mtls.credentials("ana", "ana", subject=ANA_SUBJECT)
    assert mtls.client(ana_tls, token_of="ana").datasets() == []
    with pytest.raises(Unauthenticated) as err:
        mtls.client(ana_tls, token_of="sam").datasets()  # sam's token on ana's certificate
    assert "different principals" in err.value.message
    wrong = Client(mtls.world.target, token="sbx_" + "A" * 43, tls=ana_tls, timeout=5)
    mtls.world.clients.append(wrong)
    with pytest.raises(Unauthenticated):
        wrong.datasets()


# ---- rejections ----------------------------------------------------------------------------------
def test_no_client_certificate_is_rejected(mtls: MTLS) -> None:
    no_cert = TLS(ca=mtls.world.ca, server_name="localhost")
    with pytest.raises(Unavailable):  # the handshake fails: there is no call to answer
        mtls.client(no_cert, token_of="ana").datasets()


def test_a_certificate_from_another_ca_is_rejected(mtls: MTLS) -> None:
    # Same CA name and the same subject, another key: the signature does not verify.
    stranger = make_ca("Sandbox Test CA")
    forged = mtls.credentials("forged", "ana", issuer=stranger, subject=ANA_SUBJECT)
    with pytest.raises(Unavailable):
        mtls.client(forged).datasets()
    with pytest.raises(Unavailable):
        mtls.client(forged, token_of="ana").datasets()


@pytest.mark.parametrize("when", ["expired", "not-yet-valid"])
def test_a_certificate_outside_its_validity_is_rejected(mtls: MTLS, when: str) -> None:
    now = dt.datetime.now(dt.UTC)
    valid = (
        (now - dt.timedelta(days=30), now - dt.timedelta(days=1))
        if when == "expired"
        else (now + dt.timedelta(days=1), now + dt.timedelta(days=30))
    )
    stale = mtls.credentials(when, "ana", subject=ANA_SUBJECT, valid=valid)
    with pytest.raises(Unavailable):
        mtls.client(stale).datasets()
    # The same subject on a current certificate is accepted.
    assert mtls.client(mtls.credentials("fresh", "ana", subject=ANA_SUBJECT)).datasets() == []


def test_a_certificate_whose_subject_maps_to_no_principal_is_unauthenticated(
    mtls: MTLS,
) -> None:
    # A stranger, and ana's common name without the rest of her subject: the whole DN must match.
    for stem, cn in (("nobody", "nobody"), ("partial", "ana")):
        tls = mtls.credentials(stem, cn)
        with pytest.raises(Unauthenticated) as err:
            mtls.client(tls).datasets()
        assert "not mapped" in err.value.message
        # A valid token does not rescue an unmapped certificate.
        with pytest.raises(Unauthenticated):
            mtls.client(tls, token_of="ana").datasets()


def test_a_revoked_principal_is_refused_by_certificate_too(mtls: MTLS) -> None:
    ana_tls = mtls.credentials("ana", "ana", subject=ANA_SUBJECT)
    assert mtls.client(ana_tls).datasets() == []
    db = mtls.world.server.app.db
    with db.write() as conn:
        Principals(db).revoke(conn, "ana")
        AuditLog(db).append(conn, "principal.revoked", actor="test", principal="ana")
    with pytest.raises(Unauthenticated):
        mtls.client(ana_tls).datasets()


# ---- operator commands and CLI client options ----------------------------------------------------
def cli(*args: str) -> Result:
    env = {k: None for k in os.environ if k.startswith("SANDBOX_")}
    return CliRunner(env=env).invoke(cli_main, list(args), catch_exceptions=False)


def test_map_cert_command_and_cli_client_certificates(mtls: MTLS) -> None:
    root = mtls.world.root
    config = str(root / "sandbox.toml")
    bob_subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "bob"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Uni"),
        ]
    )
    bob_tls = mtls.credentials("bob", "bob", subject=bob_subject)
    added = cli("principals", "add", "bob", "--role", "researcher", "--config", config)
    assert added.exit_code == 0, added.output
    with pytest.raises(Unauthenticated):
        mtls.client(bob_tls).datasets()
    # As `openssl x509 -noout -subject -nameopt RFC2253` prints it, "subject=" included.
    mapped = cli("principals", "map-cert", "bob", "subject=O=Uni,CN=bob", "--config", config)
    assert mapped.exit_code == 0, mapped.output
    assert mtls.client(bob_tls).datasets() == []
    entries = [r.entry for r in AuditLog(mtls.world.server.app.db).entries()]
    expected = {
        "event": "principal.cert_mapped",
        "principal": "bob",
        "cert_subject": "O=Uni,CN=bob",
    }
    assert expected.items() <= entries[-1].items()
    # One subject names one principal.
    taken = cli("principals", "map-cert", "sam", "O=Uni,CN=bob", "--config", config)
    assert taken.exit_code == 1 and "already mapped" in taken.output
    assert cli("principals", "map-cert", "nobody", "CN=x", "--config", config).exit_code == 1
    assert cli("principals", "map-cert", "bob", "no-equals-sign", "--config", config).exit_code == 2
    # `principals add --cert-subject`, then the CLI as a client with only a certificate.
    carol_tls = mtls.credentials("carol", "carol")
    made = cli(
        "principals",
        "add",
        "carol",
        "--role",
        "researcher",
        "--cert-subject",
        "CN=carol",
        "--config",
        config,
    )
    assert made.exit_code == 0, made.output
    assert carol_tls.cert is not None and carol_tls.key is not None
    shown = cli(
        "--output",
        "json",
        "keys",
        "show",
        "--target",
        mtls.world.target,
        "--tls-ca",
        str(mtls.world.ca),
        "--tls-cert",
        str(carol_tls.cert),
        "--tls-key",
        str(carol_tls.key),
    )
    assert shown.exit_code == 0, shown.output
    assert "none registered" in shown.output
    half = cli(
        "keys",
        "show",
        "--target",
        mtls.world.target,
        "--tls-ca",
        str(mtls.world.ca),
        "--tls-cert",
        str(carol_tls.cert),
    )
    assert half.exit_code == 2


# ---- bearer tokens without TLS -------------------------------------------------------------------
def health(target: str) -> int:
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return int(stub.Check(health_pb2.HealthCheckRequest(), timeout=5).status)


@pytest.fixture
def plaintext_world(world_factory: Callable[..., World]) -> Callable[[bool], World]:
    def make(allowed: bool) -> World:
        return world_factory(
            {"pums": pums_policy("pums", "pums.csv")},
            {"pums.csv": PUMS_DIR / "PUMS_pid.csv"},
            allow_plaintext_tokens=allowed,
        )

    return make


def test_plaintext_bearer_tokens_are_refused_unless_allowed(plaintext_world) -> None:
    world = plaintext_world(False)
    assert not world.config.allow_plaintext_tokens
    for name in ("ana", "sam", "root"):
        with pytest.raises(Unauthenticated) as err:
            world.client(name).datasets()
        assert "allow_plaintext_tokens" in err.value.message and "TLS" in err.value.message
    # A wrong token gets the same answer: nothing is looked up over plaintext.
    wrong = Client(world.target, token="sbx_" + "A" * 43)
    try:
        with pytest.raises(Unauthenticated) as wrong_err:
            wrong.datasets()
    finally:
        wrong.close()
    assert wrong_err.value.message == err.value.message
    # Health checks stay open.
    assert health(world.target) == health_pb2.HealthCheckResponse.SERVING


def test_plaintext_bearer_tokens_are_accepted_when_allowed(plaintext_world) -> None:
    world = plaintext_world(True)
    world.register("pums")
    world.project("p1", (("pums", "research"),))
    result = world.client("ana").sql(SQL, project="p1", purpose="research")
    assert sum(result.to_dataframe()["n"]) == 1000
    assert health(world.target) == health_pb2.HealthCheckResponse.SERVING


def test_tokens_over_tls_need_no_allowance(tmp_path: Path) -> None:
    world = build_world(tmp_path / "tls", mutual=False)
    try:
        assert not world.server.app.config.allow_plaintext_tokens
        tls = TLS(ca=world.ca, server_name="localhost")
        assert world.client("ana", tls).datasets() == []
        # Without a client certificate, the token names the principal.
        assert world.client("sam", tls).datasets() == []
    finally:
        for c in world.clients:
            c.close()
        world.server.stop(grace=1)
