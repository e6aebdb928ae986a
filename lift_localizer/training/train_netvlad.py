"""Train NetVLAD on posed maps: weak supervision from the poses (NetVLAD, CVPR 2016; Radenović
et al., TPAMI 2018).

For each map image (the query), positives are images of the same map taken nearby and looking the
same way; negatives are images of the same map far away or looking elsewhere, and every image of
the other maps. Each epoch re-mines the hardest negatives with the current model. The local
descriptors are those stored in the maps (no re-extraction); a random subset of each image's
keypoints is used at every step, which stands for occlusion and a changing keypoint budget.

    lift-localizer train netvlad --maps out/maps/kitti out/maps/tum --features lift --output netvlad_lift
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..mapping.io import load_map
from ..nets.netvlad import NetVLAD, contrastive_loss, pad_batch, triplet_ranking_loss
from ..weights import save_network
from .checkpoint import load_checkpoint, save_checkpoint

default_conf = {
    "epochs": 30,
    "batch_size": 8,
    "lr": 1e-3,
    "num_hard_negatives": 10,
    "triplet_margin": 0.1,
    "contrastive_margin": 0.7,
    "loss": "both",             # triplet | contrastive | both
    "keep_fraction": (0.5, 1.0),  # fraction of keypoints kept per image and step
    "positive_radius": 2.5,     # × the map's median nearest-camera distance
    "positive_angle_deg": 45.0,
    "negative_radius": 6.0,
    "pca_variants": 20,         # random keypoint subsets per image for the PCA
    "seed": 0,
}


@dataclass
class TrainingSet:
    descriptors: list[np.ndarray]
    map_ids: np.ndarray
    positives: list[np.ndarray]
    negative_mask: np.ndarray       # (M, M) True where j may serve as a negative for i
    sources: list[str]


def pose_neighbours(poses: np.ndarray, radius: float, angle_deg: float, neg_radius: float):
    """Positives and same-map negatives from T_map_camera (M, 4, 4), in units of the median
    distance between nearest cameras (so metric and scale-free maps are treated alike)."""
    c = poses[:, :3, 3]
    z = poses[:, :3, 2]
    d = np.linalg.norm(c[:, None] - c[None], axis=2)
    np.fill_diagonal(d, np.inf)
    spacing = float(np.median(d.min(1))) if len(c) > 1 else 1.0
    d = d / max(spacing, 1e-9)
    cos = z @ z.T
    pos_mask = (d <= radius) & (cos >= np.cos(np.radians(angle_deg)))
    positives = []
    for i in range(len(c)):
        p = np.flatnonzero(pos_mask[i])
        positives.append(p if len(p) else np.array([int(np.argmin(d[i]))]))
    neg = (d > neg_radius) | (cos < 0)
    np.fill_diagonal(neg, False)
    return positives, neg


def load_training_set(maps: list[str | Path], features: str, conf: dict) -> TrainingSet:
    descriptors, map_ids, positives, blocks, sources = [], [], [], [], []
    offset = 0
    for k, path in enumerate(maps):
        m = load_map(path, features)
        poses = np.stack([im.T_map_camera for im in m.images])
        pos, neg = pose_neighbours(poses, conf["positive_radius"], conf["positive_angle_deg"], conf["negative_radius"])
        descriptors += [im.features.descriptors for im in m.images]
        map_ids += [k] * len(m.images)
        positives += [p + offset for p in pos]
        blocks.append((offset, neg))
        offset += len(m.images)
        # The dataset and bag a map was built from, not where it lay on the training machine.
        source = Path(str(m.meta.get("source", "") or path))
        sources.append(f"map of {source.parent.name}/{source.name} ({len(m.images)} images)")
    ids = np.array(map_ids)
    negative_mask = ids[:, None] != ids[None]
    for start, neg in blocks:
        n = len(neg)
        negative_mask[start:start + n, start:start + n] = neg
    return TrainingSet(descriptors, ids, positives, negative_mask, sources)


def _subset(desc: np.ndarray, rng: np.random.Generator, keep: tuple[float, float]) -> np.ndarray:
    n = len(desc)
    if n == 0:
        return desc
    k = max(1, int(n * rng.uniform(*keep)))
    return desc[rng.choice(n, k, replace=False)]


def kmeans(descriptors: list[np.ndarray], k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    import faiss

    x = np.concatenate(descriptors).astype(np.float32)
    rng = np.random.default_rng(seed)
    sample = x[rng.choice(len(x), min(len(x), 50000), replace=False)]
    km = faiss.Kmeans(x.shape[1], k, niter=25, seed=seed, verbose=False)
    km.train(sample)
    return km.centroids, sample


def recall_at_1(net: NetVLAD, data: TrainingSet) -> float:
    """Leave-one-out on the training maps: is each image's nearest other image a positive?"""
    with torch.no_grad():
        g = torch.cat([net(*pad_batch([d])) for d in data.descriptors]).numpy()
    sim = g @ g.T
    np.fill_diagonal(sim, -np.inf)
    return float(np.mean([int(np.argmax(sim[i])) in set(p.tolist()) for i, p in enumerate(data.positives)]))


def train(maps: list[str | Path], features: str, output: str | Path, conf: dict | None = None,
          checkpoint: str | Path | None = None, resume: bool = False, log=print) -> dict:
    """Train, fit the PCA-whitening, and save ``output``.safetensors + card. Returns the card."""
    conf = {**default_conf, **(conf or {})}
    torch.manual_seed(conf["seed"])
    rng = np.random.default_rng(conf["seed"])
    data = load_training_set(maps, features, conf)
    m = len(data.descriptors)
    if m < 3 or len(set(data.map_ids.tolist())) < 1:
        raise ValueError(f"need at least 3 map images to train on, have {m}")
    identity = load_map(maps[0], features).meta["features"]
    net = NetVLAD()
    centroids, sample = kmeans(data.descriptors, net.num_clusters, conf["seed"])
    net.init_from_kmeans(centroids, sample)
    opt = torch.optim.Adam([net.weight, net.bias, net.centroids], lr=conf["lr"])
    start, history = 0, []
    ckpt = Path(checkpoint) if checkpoint else None
    if ckpt and resume and ckpt.with_suffix(".json").exists():
        start, history = load_checkpoint(ckpt, net, opt)
        log(f"resumed from {ckpt} after epoch {start}")
    r1_before = recall_at_1(net, data)
    t0 = time.perf_counter()
    for epoch in tqdm(range(start, conf["epochs"]), desc="train netvlad", unit="epoch", file=sys.stderr,
                      disable=None, initial=start, total=conf["epochs"]):
        with torch.no_grad():
            g = torch.cat([net(*pad_batch([d])) for d in data.descriptors])
        sim = (g @ g.T).numpy()
        order = rng.permutation(m)
        losses = []
        for b in range(0, m, conf["batch_size"]):
            idx = order[b:b + conf["batch_size"]]
            q_desc, p_desc, n_desc, p_count = [], [], [], []
            for i in idx:
                cand = np.flatnonzero(data.negative_mask[i])
                hard = cand[np.argsort(-sim[i, cand])[: conf["num_hard_negatives"]]]
                q_desc.append(_subset(data.descriptors[i], rng, conf["keep_fraction"]))
                p_desc += [_subset(data.descriptors[j], rng, conf["keep_fraction"]) for j in data.positives[i]]
                n_desc += [_subset(data.descriptors[j], rng, conf["keep_fraction"]) for j in hard]
                p_count.append(len(data.positives[i]))
            q = net(*pad_batch(q_desc))
            p_all = net(*pad_batch(p_desc))
            n_all = net(*pad_batch(n_desc)).view(len(idx), -1, q.shape[1])
            P = max(p_count)
            # Pad each query's positives to P by repeating its first: the minimum is unchanged.
            pos = torch.stack([p_all[sum(p_count[:k]) + torch.arange(P).clamp(max=p_count[k] - 1)]
                               for k in range(len(idx))])
            loss = torch.zeros(())
            if conf["loss"] in ("triplet", "both"):
                loss = loss + triplet_ranking_loss(q, pos, n_all, conf["triplet_margin"])
            if conf["loss"] in ("contrastive", "both"):
                a = torch.cat([q, q[:, None].expand_as(n_all).reshape(-1, q.shape[1])])
                bvec = torch.cat([pos[:, 0], n_all.reshape(-1, q.shape[1])])
                lab = torch.cat([torch.ones(len(q), dtype=torch.bool), torch.zeros(n_all.shape[0] * n_all.shape[1],
                                                                                 dtype=torch.bool)])
                loss = loss + contrastive_loss(a, bvec, lab, conf["contrastive_margin"])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses))})
        if ckpt:
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            save_checkpoint(ckpt, net, opt, epoch + 1, history)
    r1_after = recall_at_1(net, data)
    # PCA-whitening on VLAD vectors of random keypoint subsets of every training image.
    with torch.no_grad():
        variants = [_subset(d, rng, conf["keep_fraction"]) for d in data.descriptors for _ in range(conf["pca_variants"])]
        vlads = torch.cat([net.vlad(*pad_batch(variants[i:i + 64])) for i in range(0, len(variants), 64)]).numpy()
    net.fit_pca(vlads)
    r1_pca = recall_at_1(net, data)
    card = {
        "trained": True,
        "input": {"mean": 0.0, "std": 1.0},
        "features": {"name": features, "desc_sha256": identity.get("weights", {}).get("desc")},
        "training": {**{k: list(v) if isinstance(v, tuple) else v for k, v in conf.items()},
                     "seconds": round(time.perf_counter() - t0, 1), "loss_log": history},
        "data": data.sources,
        "split": "lift_localizer/training/splits.json (netvlad)",
        "quality": {"train_leave_one_out_recall@1": {"kmeans_init": r1_before, "trained": r1_after,
                                                     "trained_pca": r1_pca},
                    "held_out": "measured by `lift-localizer evaluate` on the query halves (docs/benchmarks.md)"},
        "seed": conf["seed"],
    }
    save_network("netvlad", net, output, card)
    log(f"netvlad: {m} images from {len(maps)} maps; leave-one-out recall@1 {r1_before:.3f} (k-means) → "
        f"{r1_after:.3f} (trained) → {r1_pca:.3f} (with PCA-whitening); saved {output}")
    return card
