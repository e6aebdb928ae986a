"""Network weights: a safetensors file and a JSON card per network, checked against the code on load.

The card records the architecture version, whether and how the network was trained, on what data,
its measured quality, and the input normalisation; loading refuses a card that does not match the
code, a file whose hash differs from the card's, and tensors of the wrong names or shapes.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ..nets import desc, det, ori
from ..nets import netvlad

WEIGHTS_DIR = Path(__file__).resolve().parent
CARD_FORMAT = 1

NETWORKS: dict[str, tuple[type[nn.Module], str]] = {
    "det": (det.DET, det.ARCHITECTURE),
    "ori": (ori.ORI, ori.ARCHITECTURE),
    "desc": (desc.DESC, desc.ARCHITECTURE),
    "netvlad": (netvlad.NetVLAD, netvlad.ARCHITECTURE),
}
# Networks with more than one architecture: the card names it and the class is built with it.
VARIANTS: dict[str, tuple[str, ...]] = {"desc": tuple(desc.WIDTHS), "ori": ori.ARCHITECTURES}


def architecture_of(kind: str, module: nn.Module) -> str:
    """The architecture ``module`` implements (a variant's own, else the kind's only one)."""
    return getattr(module, "architecture", NETWORKS[kind][1]) if kind in VARIANTS else NETWORKS[kind][1]


def build_module(kind: str, architecture: str | None = None) -> nn.Module:
    """An untrained network of ``kind`` in ``architecture`` (None: the kind's default)."""
    cls = NETWORKS[kind][0]
    return cls(architecture) if kind in VARIANTS and architecture else cls()


class WeightsError(RuntimeError):
    """Weights that cannot be used with this code; the message says why and which file."""


@dataclass
class LoadedNetwork:
    kind: str
    module: nn.Module
    card: dict
    path: Path

    @property
    def trained(self) -> bool:
        return bool(self.card.get("trained"))

    @property
    def mean(self) -> float:
        return float(self.card["input"]["mean"])

    @property
    def std(self) -> float:
        return float(self.card["input"]["std"])

    @property
    def sha256(self) -> str:
        """Hash of the weights' tensors (see tensors_sha256)."""
        return self.card["tensors_sha256"]


def file_sha256(path: Path) -> str:
    """Hash of a file's bytes, read in blocks (exported models, engines' inputs, a map's global index)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def tensors_sha256(state: dict[str, torch.Tensor]) -> str:
    """Hash of the tensors (names, dtypes, shapes, values in order of name).

    Not of the file: safetensors writes its JSON header in no fixed order, so equal weights can
    give different file bytes.
    """
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def paths_for(stem: str | Path) -> tuple[Path, Path]:
    """A weights name ('det') or path stem → (safetensors path, card path)."""
    stem = Path(stem)
    if stem.parent == Path("."):
        stem = WEIGHTS_DIR / stem
    stem = stem.with_suffix("") if stem.suffix in (".safetensors", ".json") else stem
    return stem.with_suffix(".safetensors"), stem.with_suffix(".json")


def save_network(kind: str, module: nn.Module, stem: str | Path, card: dict) -> Path:
    """Write ``stem``.safetensors and ``stem``.json; the card gets the format, architecture and hash."""
    if kind not in NETWORKS:
        raise ValueError(f"unknown network {kind!r}; expected one of {sorted(NETWORKS)}")
    weights_path, card_path = paths_for(stem)
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    save_file(state, str(weights_path))
    full = {"card_format": CARD_FORMAT, "network": kind, "architecture": architecture_of(kind, module), **card,
            "tensors_sha256": tensors_sha256(state)}
    card_path.write_text(json.dumps(full, indent=2) + "\n")
    return weights_path


def load_network(kind: str, stem: str | Path | None = None) -> LoadedNetwork:
    """Load network ``kind`` ('det', 'ori', 'desc') from ``stem`` (default: the shipped weights)."""
    if kind not in NETWORKS:
        raise WeightsError(f"unknown network {kind!r}; expected one of {sorted(NETWORKS)}")
    architectures = VARIANTS.get(kind, (NETWORKS[kind][1],))
    weights_path, card_path = paths_for(stem if stem is not None else kind)
    try:
        card = json.loads(card_path.read_text())
    except FileNotFoundError:
        raise WeightsError(f"{card_path}: weights card missing (every weights file needs its JSON card)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise WeightsError(f"{card_path}: not a valid JSON card ({e})") from None
    problems = []
    if card.get("card_format") != CARD_FORMAT:
        problems.append(f"card format {card.get('card_format')!r}, this code reads {CARD_FORMAT}")
    if card.get("network") != kind:
        problems.append(f"card is for network {card.get('network')!r}, not {kind!r}")
    architecture = card.get("architecture")
    if architecture not in architectures:
        problems.append(f"architecture {architecture!r}, this code implements {' or '.join(map(repr, architectures))}")
    if not isinstance(card.get("input"), dict) or not {"mean", "std"} <= set(card["input"]):
        problems.append("card lacks the input normalisation ('input': {'mean', 'std'})")
    if problems:
        raise WeightsError(f"{card_path}: " + "; ".join(problems))
    if not weights_path.exists():
        raise WeightsError(f"{weights_path}: weights file missing")
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as e:
        raise WeightsError(f"{weights_path}: not a readable safetensors file ({e})") from None
    digest = tensors_sha256(state)
    if digest != card.get("tensors_sha256"):
        raise WeightsError(f"{weights_path}: tensors' sha256 {digest[:12]}… does not match its card "
                           f"({str(card.get('tensors_sha256'))[:12]}…); the file or the card was changed")
    module = build_module(kind, architecture)
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if expected != got:
        missing = sorted(set(expected) - set(got))
        extra = sorted(set(got) - set(expected))
        shapes = sorted(k for k in set(expected) & set(got) if expected[k] != got[k])
        raise WeightsError(f"{weights_path}: tensors do not fit {architecture}: missing {missing}, "
                           f"unexpected {extra}, wrong shape {shapes}")
    module.load_state_dict({k: v.float() for k, v in state.items()})
    return LoadedNetwork(kind, module.eval(), card, weights_path)


def untrained_summary(networks: dict[str, LoadedNetwork]) -> str | None:
    """A loud one-paragraph warning naming the untrained networks, or None when all are trained."""
    names = [k.upper() for k, n in networks.items() if not n.trained]
    if not names:
        return None
    how = "; ".join(f"{k.upper()}: {networks[k].card.get('initialisation', 'untrained')}"
                    for k in networks if not networks[k].trained)
    stages = {"DET": "keypoints", "ORI": "orientations", "DESC": "descriptors"}
    what = " and ".join(stages.get(n, n) for n in names)
    return (f"WARNING: the {', '.join(names)} network weights are UNTRAINED ({how}). "
            f"The {what} come from untrained networks, not LIFT's learned ones.")


# The shipped LIFT networks, by kind.
LIFT_WEIGHTS = {"det": "det", "ori": "ori", "desc": "desc"}


def shipped_stem(kind: str, sha256: str) -> str | None:
    """The name of the shipped weights of network ``kind`` whose tensors hash to ``sha256`` (as a
    map records them), or None: how localization finds the weights a map was built with."""
    for card_path in sorted(WEIGHTS_DIR.glob("*.json")):
        try:
            card = json.loads(card_path.read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(card, dict) and card.get("network") == kind and card.get("tensors_sha256") == sha256:
            return card_path.stem
    return None


def load_networks(weights: dict[str, str] | None = None) -> dict[str, LoadedNetwork]:
    """LIFT's DET, ORI and DESC: ``weights`` names (or path stems) per kind over ``LIFT_WEIGHTS``."""
    weights = {**LIFT_WEIGHTS, **(weights or {})}
    return {kind: load_network(kind, weights[kind]) for kind in ("det", "ori", "desc")}


def shipped_netvlad_models() -> list[str]:
    """The stems of the NetVLAD models in this package (``netvlad_<features>``), sorted."""
    return sorted(p.stem for p in WEIGHTS_DIR.glob("netvlad_*.safetensors"))
