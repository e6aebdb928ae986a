"""NetVLAD layer, losses, faiss index and retrieval."""
import numpy as np
import pytest
import torch

from lift_localizer.nets.netvlad import NetVLAD, contrastive_loss, pad_batch, triplet_ranking_loss

rng = np.random.default_rng(0)


def numpy_netvlad(x, w, b, c):
    """The paper's formula, directly."""
    logits = x @ w.T + b
    a = np.exp(logits - logits.max(1, keepdims=True))
    a /= a.sum(1, keepdims=True)
    V = np.zeros_like(c)
    for k in range(len(c)):
        V[k] = (a[:, k:k + 1] * (x - c[k])).sum(0)
    V /= np.linalg.norm(V, axis=1, keepdims=True)
    v = V.ravel()
    return v / np.linalg.norm(v)


def random_layer():
    net = NetVLAD()
    with torch.no_grad():
        net.weight.normal_()
        net.bias.normal_()
        net.centroids.normal_()
    return net


def test_layer_matches_the_formula():
    net = random_layer()
    x = rng.normal(size=(50, 128)).astype(np.float32)
    expected = numpy_netvlad(x, net.weight.detach().numpy(), net.bias.detach().numpy(), net.centroids.detach().numpy())
    got = net.vlad(torch.from_numpy(x)[None])[0].detach().numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_padding_does_not_change_the_descriptor():
    net = random_layer()
    a, b = rng.normal(size=(30, 128)), rng.normal(size=(70, 128))
    x, mask = pad_batch([a, b])
    batched = net.vlad(x, mask)
    alone = net.vlad(torch.as_tensor(a, dtype=torch.float32)[None])
    torch.testing.assert_close(batched[0], alone[0], atol=1e-5, rtol=0)


def test_normalisation():
    net = random_layer()
    v = net.vlad(torch.randn(3, 40, 128)).view(3, 32, 128)
    torch.testing.assert_close(v.flatten(1).norm(dim=1), torch.ones(3))
    per_cluster = v.norm(dim=2)
    torch.testing.assert_close(per_cluster, torch.full_like(per_cluster, 1 / np.sqrt(32)))
    net.fit_pca(net.vlad(torch.randn(300, 40, 128)).detach().numpy())
    g = net(torch.randn(4, 40, 128))
    assert g.shape == (4, 256)
    torch.testing.assert_close(g.norm(dim=1), torch.ones(4))


def test_gradient_reaches_w_b_and_c():
    net = random_layer()
    net(torch.randn(2, 20, 128)).sum().backward()
    for p in (net.weight, net.bias, net.centroids):
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_kmeans_initialisation_assigns_to_the_nearest_centroid():
    net = NetVLAD()
    c = rng.normal(size=(32, 128)).astype(np.float32) * 3
    x = c[rng.integers(0, 32, 500)] + 0.1 * rng.normal(size=(500, 128)).astype(np.float32)
    net.init_from_kmeans(c, x)
    a = torch.softmax(torch.from_numpy(x) @ net.weight.T + net.bias, dim=1)
    nearest = torch.cdist(torch.from_numpy(x), torch.from_numpy(c)).argmin(1)
    assert (a.argmax(1) == nearest).all() and a.max(1).values.mean() > 0.9


def test_losses_on_hand_computed_cases():
    a = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    b = torch.tensor([[0.3, 0.4], [0.3, 0.4]])               # distance 0.5
    pos = torch.tensor([True, False])
    # positive: ½·0.25; negative: ½·max(0, 0.7 − 0.5)² = ½·0.04
    torch.testing.assert_close(contrastive_loss(a, b, pos, 0.7), torch.tensor((0.125 + 0.02) / 2))
    q = torch.tensor([[1.0, 0.0]])
    p = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])             # best positive: distance² 0
    n = torch.tensor([[[0.8, 0.6], [-1.0, 0.0]]])            # distance² 0.4 and 4
    # max(0, 0 + 0.5 − 0.4) + max(0, 0.5 − 4) = 0.1
    torch.testing.assert_close(triplet_ranking_loss(q, p, n, 0.5), torch.tensor(0.1))


def test_index_round_trip(tmp_path):
    pytest.importorskip("faiss")
    from lift_localizer.retrieval.index import build_index, load_index, save_index, search

    x = rng.normal(size=(500, 256)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    for kind in ("flat", "hnsw"):
        index, got = build_index(x, kind)
        assert got == kind
        save_index(index, tmp_path / f"{kind}.index")
        back = load_index(tmp_path / f"{kind}.index")
        s1, i1 = search(index, x[:20], 5)
        s2, i2 = search(back, x[:20], 5)
        np.testing.assert_array_equal(i1, i2)
        assert (i1[:, 0] == np.arange(20)).all()
    assert build_index(x[:10])[1] == "flat"


def test_train_and_retrieve_on_the_synthetic_room(tmp_path):
    """Train on one room map, build a second map of another room with the model, and check that
    each query's top image is one of the two mapping views nearest to it."""
    pytest.importorskip("faiss")
    pytest.importorskip("pycolmap")
    from lift_localizer.geometry.camera import Camera
    from lift_localizer.localization.localizer import Localizer
    from lift_localizer.mapping.build import build_map
    from lift_localizer.mapping.frames import Frame
    from lift_localizer.mapping.io import load_map
    from lift_localizer.synthetic import room_sequence
    from lift_localizer.training.train_netvlad import train

    def make_map(seed, name, queries=0):
        K, mapping, query = room_sequence(10, max(queries, 1), image_size=(240, 320), seed=seed)
        cam = Camera(320, 240, K)
        frames = [Frame(f"{i}", cam, T, loader=lambda im=im: im) for i, (im, T) in enumerate(mapping)]
        build_map(frames, tmp_path / name, ("sift",), {"max_keypoints": 500}, log=lambda m: None)
        return cam, query, mapping

    make_map(1, "train_map")
    card = train([tmp_path / "train_map"], "sift", tmp_path / "netvlad_sift", {"epochs": 3}, log=lambda m: None)
    assert card["features"]["name"] == "sift" and len(card["training"]["loss_log"]) == 3
    # Training lowered its objective on a fixed batch: every map image with all its keypoints, its
    # positives and every negative, from the k-means start (as train builds it) to the saved layer.
    from lift_localizer.training.train_netvlad import default_conf, kmeans, load_training_set
    from lift_localizer.weights import load_network

    data = load_training_set([tmp_path / "train_map"], "sift", default_conf)
    start = NetVLAD()
    start.init_from_kmeans(*kmeans(data.descriptors, start.num_clusters, default_conf["seed"]))

    def objective(net) -> float:
        with torch.no_grad():
            v = torch.cat([net.vlad(*pad_batch([d])) for d in data.descriptors])
        total = 0.0
        for i, positives in enumerate(data.positives):
            q, pos, neg = v[i:i + 1], v[positives][None], v[np.flatnonzero(data.negative_mask[i])][None]
            labels = torch.tensor([True] + [False] * neg.shape[1])
            total += float(triplet_ranking_loss(q, pos, neg, default_conf["triplet_margin"]))
            total += float(contrastive_loss(q.expand(len(labels), -1), torch.cat([pos[0, :1], neg[0]]), labels,
                                            default_conf["contrastive_margin"]))
        return total / len(data.positives)

    before, after = objective(start), objective(load_network("netvlad", tmp_path / "netvlad_sift").module)
    assert after < 0.95 * before, (before, after)
    # The model is picked up by name from the weights folder: point the loader there.
    import lift_localizer.retrieval.retriever as retriever

    original = retriever.model_stem
    retriever.model_stem = lambda name: str(tmp_path / f"netvlad_{name}")
    try:
        cam, query, mapping = make_map(2, "test_map", queries=4)
        m = load_map(tmp_path / "test_map")
        assert m.meta["retrieval"]["method"] == "netvlad" and m.meta["retrieval"]["index"] == "flat"
        localizer = Localizer(m)
        assert localizer.retrieval.name == "netvlad"
        centres = np.array([T[:3, 3] for _, T in mapping])
        hits = 0
        for image, T in query:
            q = localizer.extractor(image.astype(np.float32))
            top, _ = localizer.retrieval.top_k(q.descriptors, 5)
            nearest = set(np.argsort(np.linalg.norm(centres - T[:3, 3], axis=1))[:2].tolist())
            hits += int(top[0]) in nearest
        assert hits >= 3
    finally:
        retriever.model_stem = original


def test_shipped_netvlad_retrieves_the_nearest_frames_on_a_real_sequence(tmp_path):
    """TUM fr3 office with SIFT (fast): each query's top-5 holds one of the 2 map frames nearest to it."""
    pytest.importorskip("faiss")
    pytest.importorskip("pycolmap")
    from conftest import shared_path

    from lift_localizer.localization.localizer import Localizer
    from lift_localizer.bags.reader import read_frames
    from lift_localizer.mapping.build import build_map
    from lift_localizer.mapping.io import load_map
    from lift_localizer.retrieval.retriever import compatible_model

    bags = shared_path("bags", "tum_fr3_office")
    net, why = compatible_model({"name": "sift"})
    if net is None:
        pytest.skip(f"no shipped NetVLAD for SIFT: {why}")
    mapping = read_frames(bags / "mapping", pose_topic="/ground_truth/pose")
    build_map(mapping, tmp_path / "map", ("sift",), {"max_keypoints": 1000}, log=lambda m: None)
    localizer = Localizer(load_map(tmp_path / "map"), {"max_keypoints": 1000})
    assert localizer.retrieval.name == "netvlad"
    centres = np.array([f.T_map_camera[:3, 3] for f in mapping])
    hits1 = hits5 = 0
    queries = read_frames(bags / "query", pose_topic="/ground_truth/pose")
    from lift_localizer.images import to_gray

    for f in queries:
        top, _ = localizer.retrieval.top_k(localizer.extractor(to_gray(f.image())).descriptors, 5)
        nearest = set(np.argsort(np.linalg.norm(centres - f.T_map_camera[:3, 3], axis=1))[:2].tolist())
        hits1 += int(top[0]) in nearest
        hits5 += bool(nearest & set(top.tolist()))
    assert hits5 == len(queries) and hits1 >= 0.75 * len(queries)
