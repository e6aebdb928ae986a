"""Training checkpoints as safetensors + JSON (never pickles): model, Adam moments, epoch, loss log."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def save_checkpoint(path: Path, net: torch.nn.Module, opt: torch.optim.Optimizer, epoch: int, log: list) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.contiguous() for k, v in net.state_dict().items()}
    for i, p in enumerate(net.parameters()):
        st = opt.state.get(p, {})
        for name in ("exp_avg", "exp_avg_sq"):
            if name in st:
                tensors[f"adam.{i}.{name}"] = st[name].contiguous()
    save_file(tensors, str(path.with_suffix(".safetensors")))
    path.with_suffix(".json").write_text(json.dumps({"epoch": epoch, "log": log,
                                                     "steps": {i: float(opt.state[p]["step"]) for i, p in
                                                               enumerate(net.parameters()) if p in opt.state}}))


def load_checkpoint(path: Path, net: torch.nn.Module, opt: torch.optim.Optimizer) -> tuple[int, list]:
    """Restore ``net`` and ``opt`` in place; returns (epochs done, loss log)."""
    path = Path(path)
    tensors = load_file(str(path.with_suffix(".safetensors")))
    meta = json.loads(path.with_suffix(".json").read_text())
    net.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    for i, p in enumerate(net.parameters()):
        if f"adam.{i}.exp_avg" in tensors:
            opt.state[p] = {"step": torch.tensor(meta["steps"][str(i)]), "exp_avg": tensors[f"adam.{i}.exp_avg"],
                            "exp_avg_sq": tensors[f"adam.{i}.exp_avg_sq"]}
    return int(meta["epoch"]), list(meta["log"])
