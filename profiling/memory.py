"""Peak activation memory of one forward pass.

Measured, not estimated: a ``TorchDispatchMode`` sees every tensor the forward's aten ops
produce and tracks the bytes of their storages while any tensor still refers to them
(views and in-place ops share a storage and add nothing; a storage is released when its
last tensor is freed, as in eager PyTorch). The peak of that sum is what the forward needs
beyond its weights and inputs. It leaves out kernel workspaces (e.g. oneDNN scratch
buffers) and allocator rounding, and reflects eager execution under ``no_grad`` at batch 1;
a compiled runtime (TensorRT, CoreML) plans memory itself and usually needs less.
Works on the ``meta`` device, where it gives the same figure as on the CPU.
"""

from __future__ import annotations

import weakref

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


def _storage_key(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage()._cdata


class _LiveStorageBytes(TorchDispatchMode):
    def __init__(self, preexisting: set[int]) -> None:
        super().__init__()
        self.preexisting = preexisting
        self.live: dict[int, list[int]] = {}  # storage key -> [bytes, tensors referring to it]
        self.current = 0
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if "batch_norm" in func.overloadpacket.__name__:
            # only the normalised tensor: eval-mode CPU kernels return the saved statistics
            # empty, meta kernels return them C-sized; neither is activation memory
            self._track(tree_leaves(out)[0])
            return out
        for tensor in tree_leaves(out):
            if isinstance(tensor, torch.Tensor):
                self._track(tensor)
        return out

    def _track(self, tensor: torch.Tensor) -> None:
        key = _storage_key(tensor)
        if key in self.preexisting:
            return
        if key not in self.live:
            size = tensor.untyped_storage().nbytes()
            self.live[key] = [size, 0]
            self.current += size
            self.peak = max(self.peak, self.current)
        self.live[key][1] += 1
        weakref.finalize(tensor, self._release, key)

    def _release(self, key: int) -> None:
        entry = self.live[key]
        entry[1] -= 1
        if entry[1] == 0:
            self.current -= entry[0]
            del self.live[key]


def peak_activation_bytes(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> int:
    """Peak bytes of intermediate tensors alive at once during ``model(*inputs)``."""
    preexisting = {_storage_key(t) for t in (*model.parameters(), *model.buffers(), *inputs)}
    tracker = _LiveStorageBytes(preexisting)
    with torch.no_grad(), tracker:
        output = model(*inputs)
    del output
    return tracker.peak
