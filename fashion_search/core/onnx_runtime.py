"""A torch network exported to ONNX and run by ONNX Runtime on the CPU, called like the module it came from."""

from __future__ import annotations

import functools
import hashlib
import io
import logging
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

log = logging.getLogger(__name__)

OPSET = 17
# Output names say the module's return: one tensor, or a tuple of them (read back from a cached graph).
SINGLE_OUTPUT = "out"
# Bump when the export itself changes (names, axes, options): every cached graph is then exported anew.
GRAPH_FORMAT = 1


@functools.cache
def code_digest() -> str:
    """SHA-256 of every source file of the package: a forward() may call code outside its own class's file."""
    digest = hashlib.sha256()
    package = Path(__file__).resolve().parent.parent
    for file in sorted(package.rglob("*.py")):
        digest.update(str(file.relative_to(package)).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


def graph_key(module: torch.nn.Module, example: torch.Tensor) -> str:
    """What an exported graph depends on: the weights, the package's code, the input's shape past the batch axis,
    torch's version and the export format."""
    digest = hashlib.sha256(
        f"{GRAPH_FORMAT}|{OPSET}|{torch.__version__}|{tuple(example.shape[1:])}|{code_digest()}".encode()
    )
    for name, tensor in module.state_dict().items():
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:24]


def export_onnx(module: torch.nn.Module, example: torch.Tensor) -> bytes:
    """The module as an ONNX graph with a dynamic batch axis."""
    with torch.inference_mode():
        reference = module(example)
    single = isinstance(reference, torch.Tensor)
    outputs = [SINGLE_OUTPUT] if single else [f"out{i}" for i in range(len(reference))]
    buffer = io.BytesIO()
    # no_grad: parts of a network may run in inference mode, whose outputs autograd may not record.
    with warnings.catch_warnings(), torch.no_grad():  # the exporter warns about each shape it cannot prove constant
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, (example,), buffer, input_names=["x"], output_names=outputs, opset_version=OPSET,
            dynamic_axes={name: {0: "batch"} for name in ["x", *outputs]}, dynamo=False,
        )
    return buffer.getvalue()


def cached_export(module: torch.nn.Module, example: torch.Tensor, cache_dir: Path | None) -> bytes:
    """export_onnx's graph, read from cache_dir when an export of the same key is there, else exported and kept
    there (a cache that cannot be written is passed over: the graph is exported at each start)."""
    if cache_dir is None:
        return export_onnx(module, example)
    path = Path(cache_dir) / f"{type(module).__name__}-{graph_key(module, example)}.onnx"
    try:
        return path.read_bytes()
    except OSError:
        pass
    graph = export_onnx(module, example)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as tmp:
            tmp.write(graph)
        os.replace(tmp.name, path)  # whole or not at all, also with several processes exporting at once
    except OSError as exc:
        log.warning("cannot keep the exported ONNX graph in %s: %s", cache_dir, exc)
    return graph


class OrtNetwork:
    """Takes a B×… float tensor and returns what the torch module returned (a tensor or a tuple of tensors).

    Exported once with a dynamic batch axis, so any batch size runs without re-tracing; safe to call from several
    threads at once (ONNX Runtime sessions are).
    """

    def __init__(
        self, module: torch.nn.Module, example: torch.Tensor, threads: int = 0, cache_dir: Path | None = None,
    ) -> None:
        module.eval()
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(0, threads)  # 0: ONNX Runtime's default, one per physical core
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only: it logs each constant it folds at load
        # Idle pool threads sleep instead of spinning: several models and requests share the cores.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(
            cached_export(module, example, cache_dir), options, providers=["CPUExecutionProvider"],
        )
        self._single = self._session.get_outputs()[0].name == SINGLE_OUTPUT

    def __call__(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """Run the network on a batch; outputs as torch tensors on the CPU."""
        array = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        results = [torch.from_numpy(r) for r in self._session.run(None, {"x": array})]
        return results[0] if self._single else tuple(results)
