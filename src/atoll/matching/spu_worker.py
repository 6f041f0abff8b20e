"""Stand-alone worker for the ``spu`` engine: one party of SecretFlow PSI, bucket by bucket.

Why: ``spu`` (SecretFlow's PSI library) pins numpy<2 and jax, which conflict
with Atoll's own dependencies, so it runs in a separate interpreter
(``ATOLL_SPU_PYTHON``, a virtualenv with only ``spu``). This file is executed
*by that interpreter* as a script: it imports nothing from Atoll, only the
standard library and ``spu``. :mod:`atoll.matching.spu` writes a job spec
(JSON) and per-bucket CSV inputs into a private temporary directory, starts
two workers (rank 0 = receiver, rank 1 = sender) linked over loopback brpc,
and reads the per-bucket output CSVs back.

Spec: ``{"rank", "addresses": [a0, a1], "protocol": "PROTOCOL_RR22" |
"PROTOCOL_KKRT" | "PROTOCOL_ECDH", "broadcast": bool, "buckets": [{"input",
"output"}, ...], "report": path}``; the report gets per-bucket seconds.
Exit code 0 on success; errors go to stderr.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
from typing import Any

# This script's folder (atoll/matching) holds a module named ``spu``: keep it off
# the import path so that ``import spu`` finds SecretFlow's package.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]


def main(spec_path: str) -> int:
    """Run every bucket of the spec on one link; returns the exit code."""
    with open(spec_path, encoding="utf-8") as handle:
        spec: dict[str, Any] = json.load(handle)
    libspu: Any = importlib.import_module("spu.libspu")
    psi: Any = importlib.import_module("spu.psi")
    rank = int(spec["rank"])
    desc = libspu.link.Desc()
    for i, address in enumerate(spec["addresses"]):
        desc.add_party(f"party{i}", address)
    desc.connect_retry_times = 120
    desc.connect_retry_interval_ms = 500
    desc.recv_timeout_ms = 3600 * 1000
    desc.http_max_payload_size = 64 * 1024 * 1024
    lctx = libspu.link.create_brpc(desc, rank)
    protocol = psi.parse_protocol(spec["protocol"])
    curve = psi.EllipticCurveType.CURVE_FOURQ
    timings = []
    for bucket in spec["buckets"]:
        start = time.perf_counter()
        config = psi.PsiExecuteConfig(
            protocol_conf=psi.PsiProtocolConfig(
                protocol=protocol,
                receiver_rank=0,
                broadcast_result=bool(spec["broadcast"]),
                ecdh_params=psi.EcdhParams(curve=curve),
            ),
            input_params=psi.InputParams(
                path=bucket["input"], selected_keys=["id"], keys_unique=True
            ),
            output_params=psi.OutputParams(path=bucket["output"], disable_alignment=True),
        )
        psi.psi_execute(config, lctx)
        timings.append(time.perf_counter() - start)
    lctx.stop_link()
    with open(spec["report"], "w", encoding="utf-8") as handle:
        json.dump({"seconds": timings}, handle)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
