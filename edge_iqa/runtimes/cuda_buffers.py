"""GPU memory and a stream for the TensorRT backend, through NVIDIA's CUDA runtime bindings.

TensorRT's Python API runs an engine on device addresses it does not allocate. Those come from
``cuda.bindings.runtime`` (the ``cuda-bindings`` / ``cuda-python`` package, NVIDIA's own
Python binding of the CUDA runtime API; ``cuda.cudart`` in releases before 12.8), the same calls
TensorRT's own samples make. A Jetson or a GPU server scoring an engine then installs
``tensorrt`` and ``cuda-bindings`` (``pip install 'edge-iqa[tensorrt]'``), never torch.

:class:`DeviceBuffers` keeps one named buffer per engine input/output, grown on demand and
reused across batches, and one stream; every CUDA error becomes one :class:`EdgeIQAError` line
that names the call and CUDA's own message.
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np

from edge_iqa.errors import EdgeIQAError


def cuda_runtime() -> Any:
    """The ``cuda.bindings.runtime`` module (or ``cuda.cudart`` of older cuda-python), or one line why not."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:
            from cuda import cudart as runtime
        except ImportError:
            raise EdgeIQAError("TensorRT engines need NVIDIA's CUDA runtime bindings for their GPU buffers: "
                               "pip install cuda-bindings (or edge-iqa[tensorrt])") from None
    return runtime


def checked(runtime: Any, call: str, *args: Any) -> Any:
    """``runtime.<call>(*args)`` with its error code turned into an EdgeIQAError; gives the value(s) after it."""
    err, *values = getattr(runtime, call)(*args)
    if err != runtime.cudaError_t.cudaSuccess:
        _, message = runtime.cudaGetErrorString(err)
        text = message.decode() if isinstance(message, bytes) else str(message)
        raise EdgeIQAError(f"CUDA {call} failed: {text} ({getattr(err, 'name', err)})")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


class DeviceBuffers:
    """Named float32 device buffers (grown on demand, reused) and one CUDA stream.

    ``upload`` queues a host → device copy and gives the device address; ``download`` queues the
    copy back, waits for the stream, and gives the host array. Host arrays given to ``upload``
    stay referenced until the next ``synchronize`` so an asynchronous copy never reads freed memory.
    """

    def __init__(self) -> None:
        self._rt = cuda_runtime()
        self.stream = checked(self._rt, "cudaStreamCreate")
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (address, bytes)
        self._pending: list[np.ndarray] = []
        self._finalizer = weakref.finalize(self, _release, self._rt, self.stream, self._buffers)

    @property
    def stream_handle(self) -> int:
        """The stream as the integer TensorRT's ``execute_async_v3`` takes."""
        return int(self.stream)

    def address(self, name: str, nbytes: int) -> int:
        """The device address of buffer ``name``, (re)allocated when it holds fewer than ``nbytes``."""
        held = self._buffers.get(name)
        if held is not None and held[1] >= nbytes:
            return held[0]
        if held is not None:
            checked(self._rt, "cudaFree", held[0])
        pointer = int(checked(self._rt, "cudaMalloc", max(nbytes, 1)))
        self._buffers[name] = (pointer, nbytes)
        return pointer

    def upload(self, name: str, array: np.ndarray) -> int:
        host = np.ascontiguousarray(array, dtype=np.float32)
        pointer = self.address(name, host.nbytes)
        checked(self._rt, "cudaMemcpyAsync", pointer, host.ctypes.data, host.nbytes,
                self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice, self.stream)
        self._pending.append(host)
        return pointer

    def download(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        host = np.empty(shape, dtype=np.float32)
        pointer, held = self._buffers[name]
        if host.nbytes > held:
            raise EdgeIQAError(f"CUDA buffer {name!r} holds {held} bytes, {host.nbytes} asked for")
        checked(self._rt, "cudaMemcpyAsync", host.ctypes.data, pointer, host.nbytes,
                self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.stream)
        self.synchronize()
        return host

    def synchronize(self) -> None:
        checked(self._rt, "cudaStreamSynchronize", self.stream)
        self._pending.clear()

    def close(self) -> None:
        self._finalizer()


def _release(runtime: Any, stream: Any, buffers: dict[str, tuple[int, int]]) -> None:
    """Free every buffer and the stream (errors ignored: this runs at teardown)."""
    for pointer, _ in buffers.values():
        runtime.cudaFree(pointer)
    buffers.clear()
    runtime.cudaStreamDestroy(stream)
