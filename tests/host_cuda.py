"""A stand-in for cuda_memory's API over host memory, for tests of code that moves buffers to a GPU."""
from __future__ import annotations

import ctypes

import numpy as np


class HostMemoryApi:
    """cuda_memory's API with host memory standing in for device memory (copies are memmoves)."""

    name = "host"

    def __init__(self):
        self.allocations = 0

    def alloc_device(self, nbytes):
        self.allocations += 1
        block = np.empty(nbytes, np.uint8)
        return block.ctypes.data, block

    def free_device(self, owner):
        pass

    def alloc_host(self, nbytes):
        self.allocations += 1
        block = np.empty(nbytes, np.uint8)
        return block, block

    def free_host(self, owner):
        pass

    def create_stream(self):
        return object()

    def stream_handle(self, stream):
        return 0

    def destroy_stream(self, stream):
        pass

    def synchronize(self, stream):
        pass

    def htod_async(self, dst, src, stream):
        ctypes.memmove(dst, src.ctypes.data, src.nbytes)

    def dtoh_async(self, dst, src, stream):
        ctypes.memmove(dst.ctypes.data, src, dst.nbytes)
