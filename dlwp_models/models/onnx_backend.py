"""The ONNX Runtime backend of ``predict`` (classifiers) and ``translate`` (cyclegan).

Only the forward pass changes: the network (without preprocessing, which stays the eager path's
threaded decode and batched normalisation) is exported once with :func:`~.onnx_graphs.export_graph`,
checked by ONNX Runtime against the eager network, and cached beside its verified weight file as a
derived copy (:func:`dlwp_models.weights.derived.derived_copy`): ``<weights>.torch<v>.ort<v>.<size>.onnx``,
keyed by the weight file's sha256 (in its record), the torch and onnxruntime versions and the input
size (a classifier's crop; the generator's graph takes any size). A new weight file or a new
onnxruntime makes a new graph. A cached graph is trusted only while its record matches it and its
sha256 is the one recorded when it was checked; otherwise it is made again, never loaded.

A model without a verified weight file (random weights, or the caller's own file, which dlwp never
verified) has its graph exported into memory for this process only; the same happens, with a
warning, when a cached graph no longer matches the model (its parameters changed after loading).
Sessions are kept per model object: change a model's parameters after its first ONNX Runtime call
and build the model again to see them.
"""

from __future__ import annotations

import logging
import tempfile
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ExportError
from ..weights import derived, store
from ..weights.integrity import sha256_file
from .int8_backend import INT8
from .onnx_graphs import (
    check_graph,
    dynamic_samples,
    eval_mode,
    export_graph,
    graph_intact,
    import_onnxruntime,
    onnx_versions,
    session_for,
)
from .pipelines import plain_module

__all__ = ["BACKENDS", "INT8", "check_backend", "OnnxRunner", "forget_sessions", "network_runner"]

log = logging.getLogger(__name__)

#: the engines that can run a network: eager PyTorch (the book's numbers), ONNX Runtime in float32,
#: or ONNX Runtime on a graph quantized to int8 (:mod:`.int8_backend`; the classifiers)
BACKENDS = ("eager", "onnxruntime", INT8)
LOCK_TIMEOUT = 900.0  # seconds to wait for another process exporting the same graph; then export our own
_SESSIONS: weakref.WeakKeyDictionary[nn.Module, dict[tuple, Any]] = weakref.WeakKeyDictionary()


def check_backend(backend: Any) -> str:
    """``backend`` when it is one of :data:`BACKENDS` (and onnxruntime is importable when asked for)."""
    if backend not in BACKENDS:
        raise ValueError(
            f"backend must be one of {list(BACKENDS)}, got {backend!r}. 'eager' (default) is "
            "PyTorch as the book runs it; 'onnxruntime' is faster, with last-digit differences; "
            f"'{INT8}' is faster still, on a graph quantized and checked by `dlwp quantize`."
        )
    if backend != "eager":
        import_onnxruntime()
    return backend


def forget_sessions(model: nn.Module) -> None:
    """Drop the ONNX Runtime sessions made for ``model`` (its network changed: a new head)."""
    from . import int8_backend

    _SESSIONS.pop(model, None)
    int8_backend._SESSIONS.pop(model, None)


def network_runner(
    model: nn.Module,
    backend: str,
    *,
    any_size: bool,
    meaning: str,
    quantize_command: str | None = None,
    size: tuple[int, int] | None = None,
) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """What runs ``model``'s network for ``backend``: None for eager PyTorch, an :class:`OnnxRunner`,
    or (where the caller's family has one, naming the command that makes it in
    ``quantize_command``; ``size``: its one input size, checked now) an
    :class:`~.int8_backend.Int8Runner`."""
    backend = check_backend(backend)
    weight_file = getattr(model, "weight_file", None)
    if backend == "onnxruntime":
        return OnnxRunner(model, weight_file, any_size=any_size, meaning=meaning)
    if backend == INT8:
        from .int8_backend import Int8Runner

        if quantize_command is None:
            raise ValueError(
                f"the '{INT8}' backend runs the classifiers (whose int8 graphs `dlwp quantize` checks); "
                f"run {type(model).__name__} with backend 'onnxruntime' or 'eager'."
            )
        return Int8Runner(model, weight_file, command=quantize_command, size=size)
    return None


class OnnxRunner:
    """Calls a module's network through ONNX Runtime: ``runner(x)`` for a float (N, 3, H, W) batch
    on the module's device gives what ``module(x)`` gives, within the tolerance of what its output
    means (``meaning``, one of :data:`~.onnx_graphs.MEANINGS`).
    ``weight_file`` is the verified file its weights came from (its graph is cached beside it;
    None: exported for this process only). ``any_size``: the graph takes any height and width (the
    generator); otherwise one graph per input size (a classifier's crop). It knows no model family:
    the families whose registration says ``onnx`` call it."""

    def __init__(self, model: nn.Module, weight_file: store.CachedFile | None, *, any_size: bool, meaning: str) -> None:
        import_onnxruntime()
        param = next(model.parameters(), None)
        if param is None or param.dtype != torch.float32:
            raise ValueError(
                f"the onnxruntime backend runs float32 models; this one holds "
                f"{None if param is None else param.dtype}. Call model.float() first or use "
                "backend='eager'."
            )
        self.model, self.weight_file, self.device, self.any_size = model, weight_file, param.device, any_size
        self.dynamic = (0, 2, 3) if any_size else (0,)
        self.meaning = meaning  # what the network's output is (onnx_graphs.MEANINGS): how it is checked

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        from .onnx_graphs import run_session

        size = None if self.any_size else (int(x.shape[2]), int(x.shape[3]))
        sessions = _SESSIONS.setdefault(self.model, {})
        key = (size, str(self.device))
        if key not in sessions:
            with torch.inference_mode(False):  # exporting traces the network: no inference tensors
                sessions[key] = self._session(size or (32, 48))
        return run_session(sessions[key], x)

    def _session(self, size: tuple[int, int]) -> Any:
        network = plain_module(self.model)
        sample = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(0)).to(self.device)
        what = f"the ONNX graph of {type(self.model).__name__}"

        def reference(x: torch.Tensor) -> torch.Tensor:
            with eval_mode(network):
                return network(x)

        built: list[Any] = []

        def make(tmp: Path) -> dict:
            built.append(self._export(network, sample, tmp, reference, what))
            torch_version, ort_version = onnx_versions()
            return {"onnx_sha256": sha256_file(tmp), "torch": torch_version, "onnxruntime": ort_version}

        file = self.weight_file
        found = None
        if self._verified():
            found = derived.derived_copy(
                file, self._suffix(size), make, lock_timeout=LOCK_TIMEOUT, validate=graph_intact
            )
        if built:
            return built[0]
        if found is None:
            log.info(
                "%s: not cached (no verified weight file, or a cache that cannot be written); exporting "
                "it for this process",
                what,
            )
            return self._in_memory(network, sample, reference, what)
        session = session_for(found[0], self.device)
        try:
            check_graph(session, [sample], reference, what=what, meaning=self.meaning)
        except ExportError:
            log.warning(
                "%s (%s) does not reproduce the model: its parameters changed after loading? "
                "Exporting it again for this process only.",
                what,
                found[0].name,
            )
            return self._in_memory(network, sample, reference, what)
        log.info("%s: using %s", what, found[0].name)
        return session

    def cached_graph(self, size: tuple[int, int]) -> Path | None:
        """The checked float32 graph of the network at ``size`` in the cache, exported first when
        missing (what the int8 backend quantizes); None without a verified weight file."""
        with torch.inference_mode(False):
            self._session(size)
        if not self._verified():
            return None
        assert self.weight_file is not None
        found = derived.derived_copy(
            self.weight_file, self._suffix(size), lambda _tmp: None, lock_timeout=LOCK_TIMEOUT, validate=graph_intact
        )
        return None if found is None else found[0]

    def _verified(self) -> bool:
        file = self.weight_file
        return isinstance(file, store.CachedFile) and file.sha256 is not None and file.path.is_file()

    def _suffix(self, size: tuple[int, int]) -> str:
        torch_version, ort_version = onnx_versions()
        return store.onnx_suffix(
            f"torch{torch_version}", f"ort{ort_version}", "anysize" if self.any_size else f"{size[0]}x{size[1]}"
        )

    def _export(
        self,
        network: nn.Module,
        sample: torch.Tensor,
        path: Path,
        reference: Callable[[torch.Tensor], torch.Tensor],
        what: str,
    ) -> Any:
        log.info("%s: exporting (once per weight file and version of torch and onnxruntime)", what)
        export_graph(network, sample, path, dynamic=self.dynamic, input_name="input")
        session = session_for(path, self.device)
        check_graph(session, dynamic_samples(sample, self.dynamic), reference, what=what, meaning=self.meaning)
        return session

    def _in_memory(
        self, network: nn.Module, sample: torch.Tensor, reference: Callable[[torch.Tensor], torch.Tensor], what: str
    ) -> Any:
        with tempfile.TemporaryDirectory(prefix="dlwp-onnx-") as folder:
            return self._export(network, sample, Path(folder) / "graph.onnx", reference, what)
