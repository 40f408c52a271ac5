"""Generate the gRPC Python code from protos/ (or, with --check, fail if the committed code is stale)."""

from __future__ import annotations

import argparse
import filecmp
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTO_ROOT = ROOT / "protos"
PROTO_DIR = PROTO_ROOT / "fashion_search" / "rpc"
OUT_DIR = Path(__file__).resolve().parent


def generate(out_root: Path) -> list[Path]:
    """Run grpc_tools.protoc on every proto file, writing under out_root/fashion_search/rpc."""
    protos = sorted(PROTO_DIR.glob("*.proto"))
    cmd = [
        sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO_ROOT}",
        f"--python_out={out_root}", f"--pyi_out={out_root}", f"--grpc_python_out={out_root}",
        *[str(p) for p in protos],
    ]
    subprocess.run(cmd, check=True)
    return sorted((out_root / "fashion_search" / "rpc").glob("*_pb2*.py*"))


def main() -> int:
    """Entry point: regenerate, or compare with --check."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if committed generated code differs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        fresh_names = {p.name for p in fresh}
        committed = {p.name for p in OUT_DIR.glob("*_pb2*.py*")}
        if args.check:
            stale = sorted(fresh_names ^ committed)
            stale += [p.name for p in fresh if p.name in committed and not filecmp.cmp(p, OUT_DIR / p.name, False)]
            if stale:
                print(f"generated gRPC code is stale or hand-edited: {stale}; run `make protos`")
                return 1
            print(f"generated gRPC code is up to date ({len(fresh)} files)")
            return 0
        for name in committed - fresh_names:
            (OUT_DIR / name).unlink()
        for p in fresh:
            shutil.copyfile(p, OUT_DIR / p.name)
        print(f"wrote {len(fresh)} files to {OUT_DIR}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
