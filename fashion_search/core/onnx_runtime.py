"""A torch network exported to ONNX and run by ONNX Runtime on the CPU, called like the module it came from."""

from __future__ import annotations

import io
import warnings

import numpy as np
import onnxruntime as ort
import torch


class OrtNetwork:
    """Takes a B×… float tensor and returns what the torch module returned (a tensor or a tuple of tensors).

    Exported once with a dynamic batch axis, so any batch size runs without re-tracing; safe to call from several
    threads at once (ONNX Runtime sessions are).
    """

    def __init__(self, module: torch.nn.Module, example: torch.Tensor, threads: int = 0) -> None:
        module.eval()
        with torch.inference_mode():
            reference = module(example)
        self._single = isinstance(reference, torch.Tensor)
        n_out = 1 if self._single else len(reference)
        outputs = [f"out{i}" for i in range(n_out)]
        buffer = io.BytesIO()
        # no_grad: parts of a network may run in inference mode, whose outputs autograd may not record.
        with warnings.catch_warnings(), torch.no_grad():  # the exporter warns about each shape it cannot prove constant
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module, (example,), buffer, input_names=["x"], output_names=outputs, opset_version=17,
                dynamic_axes={name: {0: "batch"} for name in ["x", *outputs]}, dynamo=False,
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(0, threads)  # 0: ONNX Runtime's default, one per physical core
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only: it logs each constant it folds at load
        # Idle pool threads sleep instead of spinning: several models and requests share the cores.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])

    def __call__(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """Run the network on a batch; outputs as torch tensors on the CPU."""
        array = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        results = [torch.from_numpy(r) for r in self._session.run(None, {"x": array})]
        return results[0] if self._single else tuple(results)
