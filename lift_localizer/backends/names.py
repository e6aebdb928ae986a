"""The back ends and precisions a user can name, as plain data: no torch, so that the command line
offers ``--backend`` and ``--precision`` (and ``lift-localizer --help`` runs) without importing it."""
from __future__ import annotations

# Every back end, installed here or not: the one list the command line's --backend and the node's
# `backend` parameter offer, so that one that cannot run here is refused with the reason
# (``backends.unavailable``) instead of missing from the choices.
BACKEND_NAMES = ("auto", "torch", "onnx", "tensorrt")
# The back ends that run exported models (`lift-localizer export --backend`).
EXPORT_BACKENDS = ("onnx", "tensorrt")
# The precisions a user can name; which back end runs which is checked where it is made (backends.make_backend).
PRECISIONS = ("fp32", "fp16", "int8")
# The precisions a TensorRT engine is built in (`lift-localizer export --precision`), its default first.
ENGINE_PRECISIONS = ("fp16", "fp32", "int8")
