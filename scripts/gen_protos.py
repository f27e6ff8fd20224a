"""Regenerate sandbox/api/v1 from protos/ (the one command: ``python scripts/gen_protos.py``).

``--check`` regenerates into a temporary directory and exits 1 if the committed code differs.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
PACKAGE_DIR = Path("sandbox/api/v1")


def generate(out_root: Path) -> Path:
    protos = sorted(
        str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / PACKAGE_DIR).glob("*.proto")
    )
    grpc_include = Path(protoc.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{grpc_include}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    out = out_root / PACKAGE_DIR
    (out / "__init__.py").write_text('"""Generated protobuf and gRPC code. Do not edit."""\n')
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--check", action="store_true", help="fail if committed code drifts")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        target = ROOT / PACKAGE_DIR
        if args.check:
            names = sorted(p.name for p in fresh.iterdir() if p.is_file())
            committed = sorted(
                p.name for p in target.glob("*") if p.is_file() and p.suffix in {".py", ".pyi"}
            )
            _, mismatch, errors = filecmp.cmpfiles(fresh, target, names, shallow=False)
            if mismatch or errors or names != committed:
                print(
                    f"generated code drifted: {sorted(mismatch + errors) or committed}",
                    file=sys.stderr,
                )
                return 1
            return 0
        target.mkdir(parents=True, exist_ok=True)
        for old in target.glob("*_pb2*.py*"):
            old.unlink()
        for path in fresh.iterdir():
            if path.is_file():
                shutil.copy2(path, target / path.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
