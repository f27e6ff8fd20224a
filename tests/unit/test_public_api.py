"""The public surface is pinned, importable, and free of generated protobuf types."""

from __future__ import annotations

import ast
import importlib
import inspect
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import sandbox

EXPECTED_ALL = [
    "AggFunc",
    "Aggregate",
    "AlreadyExists",
    "AuditTampered",
    "AwaitingApproval",
    "BudgetExhausted",
    "CellStatus",
    "Client",
    "ConfigError",
    "DatasetChanged",
    "DatasetInfo",
    "DisclosureControl",
    "Estimate",
    "Filter",
    "FilterOp",
    "InvalidArgument",
    "InvalidJobSpec",
    "Job",
    "JobCancelled",
    "JobFailed",
    "JobInfo",
    "JobNotFinished",
    "JobSpec",
    "JobState",
    "NotFound",
    "PendingReview",
    "PermissionDenied",
    "PolicyDenied",
    "PolicyInvalid",
    "PreparedJob",
    "PrivateKeyRequired",
    "Project",
    "Query",
    "QuotaExceeded",
    "QuotaLimits",
    "QuotaUsage",
    "ResourceExhausted",
    "Result",
    "Role",
    "SandboxError",
    "SealBroken",
    "TLS",
    "TOTAL",
    "Timeout",
    "Unauthenticated",
    "Unavailable",
    "__version__",
]

FORBIDDEN_MODULES = ("sandbox.api", "google.protobuf", "grpc")


def test_all_is_pinned() -> None:
    # Order-insensitive (the source keeps ruff's RUF022 order); no name added or dropped.
    assert sorted(sandbox.__all__) == EXPECTED_ALL
    assert len(set(sandbox.__all__)) == len(sandbox.__all__)


@pytest.mark.parametrize("name", EXPECTED_ALL)
def test_every_exported_name_is_importable(name: str) -> None:
    module = importlib.import_module("sandbox")
    assert hasattr(module, name)
    # What ``from sandbox import <name>`` does.
    imported = getattr(__import__("sandbox", fromlist=[name]), name)
    assert imported is getattr(sandbox, name)


def test_errors_share_one_root() -> None:
    exported = [getattr(sandbox, n) for n in EXPECTED_ALL]
    errors = [e for e in exported if isinstance(e, type) and issubclass(e, BaseException)]
    assert len(errors) == 24
    assert all(issubclass(e, sandbox.SandboxError) for e in errors)


def _leaves(annotation: Any) -> Iterator[Any]:
    """Every concrete type mentioned in an annotation (through unions and generics)."""
    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    if origin is not None:
        yield origin
    if args:
        for arg in args:
            yield from _leaves(arg)
    elif origin is None:
        yield annotation


def _public_methods(cls: type) -> list[tuple[str, Any]]:
    return [
        (name, member)
        for name, member in inspect.getmembers(cls)
        if not name.startswith("_") and (inspect.isfunction(member) or isinstance(member, property))
    ]


@pytest.mark.parametrize(
    "cls", [sandbox.Client, sandbox.Job, sandbox.PreparedJob, sandbox.Query, sandbox.Result]
)
def test_no_protobuf_in_public_signatures(cls: type) -> None:
    methods = [*_public_methods(cls), ("__init__", cls.__init__)]
    assert methods
    checked = 0
    for name, member in methods:
        fn = member.fget if isinstance(member, property) else member
        if not inspect.isfunction(fn):
            continue  # e.g. a dataclass without a custom __init__ body
        hints = typing.get_type_hints(fn)
        signature = inspect.signature(fn)
        # Every parameter and the return value are annotated.
        for param in signature.parameters.values():
            if param.name != "self":
                assert param.name in hints, f"{cls.__name__}.{name}({param.name}) unannotated"
        for label, annotation in hints.items():
            for leaf in _leaves(annotation):
                module = getattr(leaf, "__module__", "") or ""
                assert not module.startswith(FORBIDDEN_MODULES), (
                    f"{cls.__name__}.{name}: {label} is {leaf!r} from {module}"
                )
                checked += 1
    assert checked > 0


def test_client_signature_sanity() -> None:
    # The client's main methods take and return domain objects.
    hints = typing.get_type_hints(sandbox.Client.submit)
    assert hints["return"] is sandbox.Job
    assert typing.get_type_hints(sandbox.Client.datasets)["return"] == list[sandbox.DatasetInfo]
    assert typing.get_type_hints(sandbox.Client.quota)["return"] is sandbox.QuotaUsage
    assert typing.get_type_hints(sandbox.Client.prepare)["return"] is sandbox.PreparedJob
    assert typing.get_type_hints(sandbox.PreparedJob.preview)["return"] is sandbox.Estimate
    assert typing.get_type_hints(sandbox.PreparedJob.submit)["return"] is sandbox.Job
    assert typing.get_type_hints(sandbox.PreparedJob.run)["return"] is sandbox.Result


def _imports_generated_code(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sandbox.api"):
            return True
        if isinstance(node, ast.Import) and any(
            a.name.startswith("sandbox.api") for a in node.names
        ):
            return True
    return False


def test_only_the_wire_module_the_server_and_the_client_import_generated_code() -> None:
    """Every other module (pipeline, policy, disclosure, federation, ...) is transport-free."""
    root = Path(sandbox.__file__).parent
    importers = {
        p.relative_to(root).as_posix()
        for p in root.rglob("*.py")
        if not p.relative_to(root).as_posix().startswith("api/") and _imports_generated_code(p)
    }
    allowed = {p for p in importers if p == "_wire.py" or p.startswith(("server/", "client/"))}
    assert importers == allowed
    assert "_wire.py" in importers and "client/_client.py" in importers  # the scan sees imports
