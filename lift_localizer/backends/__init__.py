"""Back ends that run the LIFT networks. Each offers ``det(level)``, ``ori(patches)`` and
``desc(patches)`` on normalised inputs (see ``torch_backend.TorchBackend`` for the shapes)."""
from __future__ import annotations

from ..weights import LoadedNetwork

BACKENDS = ("torch",)


def make_backend(name: str, networks: dict[str, LoadedNetwork], device: str = "cpu", batch_size: int = 256):
    if name == "torch":
        from .torch_backend import TorchBackend

        return TorchBackend(networks, device=device, batch_size=batch_size)
    raise ValueError(f"unknown back end {name!r}; available here: {', '.join(BACKENDS)}")
