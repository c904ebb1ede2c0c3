"""Builds hourglass-sdk: the gRPC stubs are generated from proto/ with grpcio-tools while building.

The contract lives in the repository's proto/ (two directories up); an sdist carries a copy in its own
proto/, and HOURGLASS_PROTO_DIR names another. Only the public contract (hourglass/v1) is generated: the
Kafka record format (hourglass/log/v1) is no client's business.
"""

import os
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

HERE = Path(__file__).resolve().parent
CONTRACT = Path("hourglass") / "v1"


def proto_root() -> Path:
    candidates = [os.environ.get("HOURGLASS_PROTO_DIR"), HERE / "proto", HERE.parent.parent / "proto"]
    for candidate in candidates:
        if candidate and (Path(candidate) / CONTRACT / "ingest.proto").is_file():
            return Path(candidate)
    raise SystemExit(
        "hourglass-sdk: cannot find the proto files (hourglass/v1/*.proto) in "
        + ", ".join(str(candidate) for candidate in candidates if candidate)
        + ": build from the repository (pip install sdks/python) or set HOURGLASS_PROTO_DIR"
    )


def generate_stubs(out_dir: Path) -> None:
    """Writes hourglass/v1/*_pb2.py, *_pb2.pyi and *_pb2_grpc.py under out_dir."""
    import grpc_tools
    from grpc_tools import protoc

    root = proto_root()
    well_known = Path(grpc_tools.__file__).parent / "_proto"  # google/protobuf/timestamp.proto
    protos = sorted(str(path.relative_to(root)) for path in (root / CONTRACT).glob("*.proto"))
    (out_dir / CONTRACT).mkdir(parents=True, exist_ok=True)
    arguments = [
        "grpc_tools.protoc",
        f"--proto_path={root}",
        f"--proto_path={well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *protos,
    ]
    if protoc.main(arguments) != 0:
        raise SystemExit(f"hourglass-sdk: protoc failed on {', '.join(protos)} in {root}")


class BuildPyWithStubs(build_py):
    """build_py, then the stubs: into the build tree, or into src/ for an editable install."""

    def run(self):
        super().run()
        generate_stubs(HERE / "src" if getattr(self, "editable_mode", False) else Path(self.build_lib))


class SdistWithProtos(sdist):
    """An sdist carries the proto files, so it builds away from the repository."""

    def make_release_tree(self, base_dir, files):
        super().make_release_tree(base_dir, files)
        shutil.copytree(proto_root() / CONTRACT, Path(base_dir) / "proto" / CONTRACT, dirs_exist_ok=True)


setup(cmdclass={"build_py": BuildPyWithStubs, "sdist": SdistWithProtos})
