"""Generate the Python gRPC stubs from `proto/` (run as `python -m fashion_rerank.protogen`, or `make proto`).

`proto/fashion_rerank/v1/*.proto` -> `fashion_rerank/v1/<name>_pb2.py`, `_pb2.pyi`, `_pb2_grpc.py`,
with grpcio-tools' bundled `protoc` (`-Iproto`, output to the repository root). The output depends
only on the .proto files and the pinned grpcio-tools version, so the committed stubs can be checked
for staleness by regenerating into a temporary folder and comparing bytes (tests/test_sidecar.py).
"""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path

#: Repository root (this file is fashion_rerank/protogen.py).
ROOT = Path(__file__).resolve().parents[1]
PROTO_DIR = ROOT / "proto"
#: Package folder of the generated stubs, relative to the output root.
PACKAGE = Path("fashion_rerank") / "v1"


def proto_files(proto_dir: Path = PROTO_DIR) -> list[Path]:
    """The .proto files to compile, relative to `proto_dir`, in a fixed (sorted) order."""
    return sorted(p.relative_to(proto_dir) for p in (proto_dir / PACKAGE).glob("*.proto"))


def generate(out_dir: Path = ROOT, proto_dir: Path = PROTO_DIR) -> list[Path]:
    """Compile every proto into `out_dir` (stubs land in `out_dir/fashion_rerank/v1/`).

    Returns the generated files (absolute paths), sorted.

    Raises:
        RuntimeError: protoc failed (its message is printed on stderr).
    """
    from grpc_tools import protoc

    out_dir = Path(out_dir)
    (out_dir / PACKAGE).mkdir(parents=True, exist_ok=True)
    files = proto_files(proto_dir)
    well_known = str(resources.files("grpc_tools") / "_proto")
    args = [
        "grpc_tools.protoc",
        f"-I{proto_dir}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *[str(f) for f in files],
    ]
    rc = protoc.main(args)
    if rc != 0:
        raise RuntimeError(f"protoc failed with exit code {rc}: {' '.join(args)}")
    out: list[Path] = []
    for f in files:
        stem = f.with_suffix("").name
        out += [out_dir / PACKAGE / f"{stem}{suffix}" for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")]
    return sorted(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fashion_rerank.protogen", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT, help="output root (default: the repository root)")
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(path)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
