"""Cheaper DET convolutions, computed from whatever DET weights are loaded: exact routes through the
bank's distinct filters, separable (SVD) approximations within a stated tolerance with an exact
fallback, and FFT convolution; chosen by measured costs (``COSTS``).

DET is ``GHH(conv2d(x, W, b))`` with F = 16 filters of k × k = 25 × 25 taps. What makes it cheaper:

1. **Repeated filters.** A GHH bank can hold the same filter several times, up to sign: the analytic
   |LoG| init holds +L and -L twice each and 12 zero filters, and training from it keeps the copies
   identical (identical gradients: a 1-epoch trial run still had 3 distinct filters out of 16). Each
   distinct filter is convolved once (``merge_duplicates``), exactly.
2. **The GHH needs no 16-channel tensor.** Within a group, equal pieces are taken once, a group with a
   single distinct piece is linear, and max(R + b, −R + b) = |R| + b (``GhhPlan``, exact).
3. **FFT per distinct filter** (``FftResponses``, torch.fft, exact to ~1e-6 of the score range) costs
   ~5 % of today's DET per distinct filter on this CPU, while PyTorch's dense convolution of a
   1-channel input costs about the same for 1 filter as for 16.
4. **Low separable rank.** By the SVD, filter f = Σ_i σ_fi u_fi v_fiᵀ and the rank-r truncation is the
   best rank-r approximation in the Frobenius norm. Each term is a vertical k×1 then a horizontal 1×k
   convolution, 2k instead of k² multiply–accumulates per pixel (Rigamonti, Sironi, Lepetit, Fua,
   "Learning Separable Filters", CVPR 2013, LIFT's authors' group). The rank is chosen on the **score
   map** (after the GHH): the smallest r whose map on probe images differs from the exact one by at
   most ``tolerance`` × the exact map's range (``choose_rank``), used only where it is cheaper than the
   exact route. On this CPU a term costs ~3 % of today's DET (``cv2.sepFilter2D``; PyTorch's 1-channel
   and depthwise convolutions are several times slower), so 16 distinct filters break even at 2 terms
   each, where trained-like banks are 10–60 % off: measured, the separable form is chosen only for
   banks of very few, nearly separable distinct filters.

Measurements, costs and keypoint agreement: ``python tools/det_approx.py``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

DEFAULT_TOLERANCE = 0.003

# Costs of one DET pass (21 levels at 640×480) by route, as a fraction of PyTorch's dense 16-filter
# convolution + GHH (today's DET), for U distinct filters and P separable terms. CPU: measured here
# with `python tools/det_approx.py --threads 1` (interleaved medians; with 2 threads
# on a shared 2-core machine every multi-threaded op waits ~8 ms for a time slice): dense + GHH
# plan 0.95 for any U (PyTorch's cost does not fall with the filter count); torch.fft 0.051 (U = 1),
# 0.154 (3), 1.45 (16); cv2.sepFilter2D 0.029 per term; PyTorch's vertical + depthwise pair 0.25 for
# 1 term, 1.13 for 16. CUDA: cost taken as proportional to the MACs (not measured).
COSTS = {
    "cpu": {"dense": lambda u: 0.95, "fft": lambda u: 0.05 * u + 0.003 * u * u,
            "opencv_terms": lambda p: 0.029 * p, "torch_terms": lambda p: 0.2 + 0.06 * p},
    "cuda": {"dense": lambda u: u / 16, "fft": lambda u: u / 16,
             "opencv_terms": lambda p: float("inf"), "torch_terms": lambda p: p * 2 / 25 / 16},
}


def _filters(weight: torch.Tensor) -> torch.Tensor:
    w = weight.detach().to("cpu", torch.float64)
    if w.ndim == 4:
        if w.shape[1] != 1:
            raise ValueError(f"DET filters have one input channel, got weight shape {tuple(weight.shape)}")
        w = w[:, 0]
    if w.ndim != 3 or w.shape[-1] != w.shape[-2]:
        raise ValueError(f"expected (F, k, k) or (F, 1, k, k) filters, got {tuple(weight.shape)}")
    return w


# ---------------------------------------------------------------------------------------------------
# The bank's structure: distinct filters, and the GHH over them
# ---------------------------------------------------------------------------------------------------

@dataclass
class MergedBank:
    """F filters written as ``sign[c] * unique[index[c]]`` plus ``bias[c]``; zero filters have sign 0."""

    unique: torch.Tensor   # (U, k, k) float64
    index: torch.Tensor    # (F,) long, into unique (0 where sign is 0)
    sign: torch.Tensor     # (F,) float64 in {-1, 0, 1}
    bias: torch.Tensor     # (F,) float64

    @property
    def kernel_size(self) -> int:
        return self.unique.shape[-1]

    def expand(self, responses: torch.Tensor) -> torch.Tensor:
        """(B, U, h, w) responses of the distinct filters → (B, F, h, w) = conv2d(x, W, b)."""
        b, _, h, w = responses.shape
        if len(self.unique) == 0:
            return self.bias.to(responses).view(1, -1, 1, 1).expand(b, -1, h, w).contiguous()
        sign, bias = self.sign.to(responses).view(1, -1, 1, 1), self.bias.to(responses).view(1, -1, 1, 1)
        return responses[:, self.index.to(responses.device)] * sign + bias


def merge_duplicates(weight: torch.Tensor, bias: torch.Tensor | None = None) -> MergedBank:
    """Distinct filters of a bank, up to sign (exact equality of the float values); zero filters dropped."""
    w = _filters(weight)
    n = len(w)
    b = torch.zeros(n, dtype=torch.float64) if bias is None else bias.detach().to("cpu", torch.float64)
    unique: list[torch.Tensor] = []
    index = torch.zeros(n, dtype=torch.long)
    sign = torch.zeros(n, dtype=torch.float64)
    for c in range(n):
        if not torch.any(w[c] != 0):
            continue
        for u, f in enumerate(unique):
            if torch.equal(w[c], f):
                index[c], sign[c] = u, 1.0
                break
            if torch.equal(w[c], -f):
                index[c], sign[c] = u, -1.0
                break
        else:
            index[c], sign[c] = len(unique), 1.0
            unique.append(w[c])
    k = w.shape[-1]
    stack = torch.stack(unique) if unique else torch.zeros((0, k, k), dtype=torch.float64)
    return MergedBank(stack, index, sign, b)


class GhhPlan:
    """``ghh(bank.expand(R), num_sum, num_max)`` computed from the distinct responses R (B, U, h, w)
    without the F-channel tensor: pieces repeated within a group are taken once, single-piece groups
    are folded into one linear combination, and a ±R pair with equal biases is |R| + b. Exact up to
    float rounding (sums reordered)."""

    def __init__(self, bank: MergedBank, num_sum: int = 4, num_max: int = 4) -> None:
        group = num_sum * num_max
        n = len(bank.index)
        if n % group:
            raise ValueError(f"GHH needs a multiple of {group} channels, got {n}")
        self.units = []
        for unit in range(n // group):
            linear = torch.zeros(len(bank.unique), dtype=torch.float64)
            const = 0.0
            nonlinear = []   # (group sign, [(u or None, sign, bias), ...])
            for s in range(num_sum):
                g = 1.0 if s % 2 == 0 else -1.0
                pieces = []
                for m in range(num_max):
                    c = (unit * num_sum + s) * num_max + m
                    sgn = float(bank.sign[c])
                    piece = (None if sgn == 0 else int(bank.index[c]), sgn, float(bank.bias[c]))
                    if piece not in pieces:
                        pieces.append(piece)
                if len(pieces) == 1:
                    u, sgn, b = pieces[0]
                    if u is not None:
                        linear[u] += g * sgn
                    const += g * b
                else:
                    nonlinear.append((g, pieces))
            self.units.append((linear, const, nonlinear))

    @staticmethod
    def _piece(r: torch.Tensor, piece) -> torch.Tensor:
        u, sgn, b = piece
        if u is None:
            return r.new_full((r.shape[0],) + tuple(r.shape[2:]), b)
        x = r[:, u] if sgn > 0 else -r[:, u]
        return x + b if b else x.clone() if sgn > 0 else x

    def __call__(self, r: torch.Tensor) -> torch.Tensor:
        outs = []
        for linear, const, nonlinear in self.units:
            out = r.new_full((r.shape[0],) + tuple(r.shape[2:]), const)
            for u in torch.nonzero(linear)[:, 0].tolist():
                out.add_(r[:, u], alpha=float(linear[u]))
            for g, pieces in nonlinear:
                if len(pieces) == 2 and pieces[0][0] is not None and pieces[0][0] == pieces[1][0] \
                        and pieces[0][1] == -pieces[1][1] and pieces[0][2] == pieces[1][2]:
                    m = r[:, pieces[0][0]].abs()
                    out.add_(m, alpha=g).add_(g * pieces[0][2])
                    continue
                m = self._piece(r, pieces[0])
                for p in pieces[1:]:
                    torch.maximum(m, self._piece(r, p), out=m)
                out.add_(m, alpha=g)
            outs.append(out)
        return torch.stack(outs, 1)


# ---------------------------------------------------------------------------------------------------
# SVD and the separable form
# ---------------------------------------------------------------------------------------------------

def filter_svd(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-filter SVD in float64: filters (F, k, k) → U (F, k, k), S (F, k), Vh (F, k, k)."""
    return torch.linalg.svd(_filters(weight))


def relative_errors(weight: torch.Tensor) -> torch.Tensor:
    """(F, k + 1): ‖W_f − W_f^(r)‖_F / ‖W_f‖_F of each filter's best rank-r approximation, r = 0 … k
    (zero filters: 0 at every rank)."""
    s2 = filter_svd(weight)[1] ** 2
    tail = torch.flip(torch.cumsum(torch.flip(s2, [1]), 1), [1])           # Σ_{i ≥ r} σ_i², r = 0 … k−1
    tail = torch.cat([tail, torch.zeros_like(tail[:, :1])], 1)
    total = s2.sum(1, keepdim=True)
    return torch.where(total > 0, torch.sqrt(tail / total.clamp_min(1e-300)), torch.zeros_like(tail))


def bank_relative_errors(weight: torch.Tensor) -> torch.Tensor:
    """(k + 1,): ‖W − W^(r)‖_F / ‖W‖_F for the whole bank with every filter at rank r."""
    s2 = filter_svd(weight)[1] ** 2
    tail = torch.flip(torch.cumsum(torch.flip(s2.sum(0), [0]), 0), [0])
    tail = torch.cat([tail, tail.new_zeros(1)])
    return torch.sqrt(tail / tail[0].clamp_min(1e-300))


@dataclass
class Separable:
    """Distinct filter u ≈ Σ_{p: owner[p] = u} vertical[p] ⊗ horizontal[p] (each term's σ split as √σ
    on both). ``rank``: the cap per distinct filter (one of lower numerical rank keeps fewer terms);
    ``component[p]``: the term's index in its filter's SVD."""

    vertical: torch.Tensor     # (P, k) float64
    horizontal: torch.Tensor   # (P, k) float64
    owner: torch.Tensor        # (P,) long
    component: torch.Tensor    # (P,) long
    rank: int
    distinct: int

    @property
    def terms(self) -> int:
        return len(self.vertical)

    @property
    def kernel_size(self) -> int:
        return self.vertical.shape[1]

    def subset(self, keep: torch.Tensor) -> Separable:
        return Separable(self.vertical[keep], self.horizontal[keep], self.owner[keep], self.component[keep],
                         self.rank, self.distinct)


def separable_factors(weight: torch.Tensor | MergedBank, rank: int, rtol: float = 1e-7) -> Separable:
    """Rank-``rank`` separable form of the bank's distinct filters from their SVDs. Singular values
    at or below ``rtol`` × the bank's largest are dropped (a rank-2 filter keeps 2 terms at any rank ≥ 2)."""
    if rank < 0:
        raise ValueError(f"rank must be >= 0, got {rank}")
    bank = weight if isinstance(weight, MergedBank) else merge_duplicates(weight)
    k = bank.kernel_size
    vertical, horizontal, owner, component = [], [], [], []
    if len(bank.unique):
        u, s, vh = torch.linalg.svd(bank.unique)
        floor = rtol * float(s.max())
        for f in range(len(s)):
            for i in range(min(rank, k)):
                if s[f, i] <= floor:
                    break
                root = torch.sqrt(s[f, i])
                vertical.append(u[f, :, i] * root)
                horizontal.append(vh[f, i, :] * root)
                owner.append(f)
                component.append(i)
    if not vertical:
        empty = torch.zeros((0, k), dtype=torch.float64)
        none = torch.zeros(0, dtype=torch.long)
        return Separable(empty, empty.clone(), none, none.clone(), rank, len(bank.unique))
    return Separable(torch.stack(vertical), torch.stack(horizontal), torch.tensor(owner), torch.tensor(component),
                     rank, len(bank.unique))


# ---------------------------------------------------------------------------------------------------
# Responses of the distinct filters, (B, 1, H, W) → (B, U, H − k + 1, W − k + 1), by route
# ---------------------------------------------------------------------------------------------------

def _out_shape(x: torch.Tensor, k: int) -> tuple[int, int, int]:
    return x.shape[0], x.shape[-2] - k + 1, x.shape[-1] - k + 1


def dense_responses(x: torch.Tensor, bank: MergedBank) -> torch.Tensor:
    """One dense PyTorch convolution over the distinct filters (exact)."""
    b, oh, ow = _out_shape(x, bank.kernel_size)
    if len(bank.unique) == 0:
        return x.new_zeros((b, 0, oh, ow))
    return F.conv2d(x, bank.unique.to(x)[:, None])


def filter2d_responses(x: torch.Tensor, bank: MergedBank) -> torch.Tensor:
    """One ``cv2.filter2D`` per distinct filter (CPU, float32; DFT-based for kernels this large; exact
    to float rounding). A view into a full-size buffer."""
    import cv2

    b, oh, ow = _out_shape(x, bank.kernel_size)
    m = bank.kernel_size // 2
    src = x.detach().float().contiguous().numpy()
    kernels = bank.unique.float().numpy()
    buf = np.empty((b, len(kernels)) + tuple(x.shape[-2:]), np.float32)
    for i in range(b):
        for u, kernel in enumerate(kernels):
            # filter2D correlates (no flip), like conv2d.
            cv2.filter2D(src[i, 0], cv2.CV_32F, kernel, dst=buf[i, u], borderType=cv2.BORDER_CONSTANT)
    return torch.from_numpy(buf)[..., m:m + oh, m:m + ow].to(x.dtype)


def separable_terms_torch(x: torch.Tensor, sep: Separable) -> torch.Tensor:
    """(B, P, h, w) responses of every term: one vertical convolution 1→P, one depthwise horizontal."""
    b, oh, ow = _out_shape(x, sep.kernel_size)
    if sep.terms == 0:
        return x.new_zeros((b, 0, oh, ow))
    y = F.conv2d(x, sep.vertical.to(x)[:, None, :, None])                           # (B, P, h, W)
    return F.conv2d(y, sep.horizontal.to(x)[:, None, None, :], groups=sep.terms)   # (B, P, h, w)


def sum_terms(terms: torch.Tensor, sep: Separable) -> torch.Tensor:
    """(B, P, h, w) → (B, U, h, w): each distinct filter's terms summed."""
    out = terms.new_zeros((terms.shape[0], sep.distinct) + terms.shape[2:])
    return out.index_add_(1, sep.owner.to(terms.device), terms) if sep.terms else out


def separable_responses_torch(x: torch.Tensor, sep: Separable) -> torch.Tensor:
    return sum_terms(separable_terms_torch(x, sep), sep)


def separable_responses_opencv(x: torch.Tensor, sep: Separable) -> torch.Tensor:
    """One ``cv2.sepFilter2D`` per term, accumulated per distinct filter (CPU, float32). A view into a
    full-size buffer."""
    import cv2

    if x.device.type != "cpu":
        raise ValueError("the opencv engine runs on the CPU")
    b, oh, ow = _out_shape(x, sep.kernel_size)
    m = sep.kernel_size // 2
    src = x.detach().float().contiguous().numpy()
    vert, hori = sep.vertical.float().numpy(), sep.horizontal.float().numpy()
    owner = sep.owner.tolist()
    buf = np.zeros((b, sep.distinct) + tuple(x.shape[-2:]), np.float32)
    tmp = np.empty(tuple(x.shape[-2:]), np.float32)
    for i in range(b):
        started = set()
        for t, u in enumerate(owner):
            # sepFilter2D correlates like conv2d: kernelX along rows (horizontal), kernelY along columns.
            if u in started:
                cv2.sepFilter2D(src[i, 0], cv2.CV_32F, hori[t], vert[t], dst=tmp, borderType=cv2.BORDER_CONSTANT)
                cv2.add(buf[i, u], tmp, dst=buf[i, u])
            else:
                cv2.sepFilter2D(src[i, 0], cv2.CV_32F, hori[t], vert[t], dst=buf[i, u],
                                borderType=cv2.BORDER_CONSTANT)
                started.add(u)
    return torch.from_numpy(buf)[..., m:m + oh, m:m + ow].to(x.dtype)


def next_fast_size(n: int) -> int:
    """Smallest m ≥ n whose only prime factors are 2, 3, 5 and 7."""
    m = n
    while True:
        r = m
        for p in (2, 3, 5, 7):
            while r % p == 0:
                r //= p
        if r == 1:
            return m
        m += 1


class FftResponses:
    """Distinct-filter responses through torch.fft (exact to rounding); filter spectra cached per size."""

    def __init__(self, bank: MergedBank) -> None:
        self.bank = bank
        self._spectra: dict = {}

    def _spectrum(self, fh: int, fw: int, device, dtype) -> torch.Tensor:
        key = (fh, fw, str(device), dtype)
        if key not in self._spectra:
            flipped = torch.flip(self.bank.unique, (-2, -1)).to(device, dtype)
            self._spectra[key] = torch.fft.rfft2(flipped, s=(fh, fw))
        return self._spectra[key]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        k = self.bank.kernel_size
        b, oh, ow = _out_shape(x, k)
        if len(self.bank.unique) == 0:
            return x.new_zeros((b, 0, oh, ow))
        h, w = x.shape[-2:]
        fh, fw = next_fast_size(h), next_fast_size(w)
        real = torch.float64 if x.dtype == torch.float64 else torch.float32
        spec = torch.fft.rfft2(x.to(real), s=(fh, fw))                           # (B, 1, fh, fw // 2 + 1)
        # Circular convolution with the flipped kernel: outputs from index k − 1 on have no wrap-around.
        y = torch.fft.irfft2(spec * self._spectrum(fh, fw, x.device, real), s=(fh, fw))
        return y[..., k - 1:h, k - 1:w].to(x.dtype)


def separable_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, rank: int,
                   engine: str = "torch") -> torch.Tensor:
    """conv2d(x, W_rank, b), (B, F, H − k + 1, W − k + 1): the bank at separable rank ``rank``."""
    bank = merge_duplicates(weight, bias)
    sep = separable_factors(bank, rank)
    r = separable_responses_opencv(x, sep) if engine == "opencv" else separable_responses_torch(x, sep)
    return bank.expand(r)


def fft_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """conv2d(x, weight, bias) through torch.fft."""
    bank = merge_duplicates(weight, bias)
    return bank.expand(FftResponses(bank)(x))


# ---------------------------------------------------------------------------------------------------
# Choosing the rank
# ---------------------------------------------------------------------------------------------------

def default_probes(mean: float = 0.0, std: float = 1.0, size: int = 192) -> list[torch.Tensor]:
    """Normalised probe images for the rank choice: the project's synthetic texture (structure from 3 to
    100 pixels; ``size`` >= 128) at full and half size. On a real 640×480 image over 21 levels, the score-map error
    measured here tracked the probes' within a factor 1.5."""
    import cv2

    from ..synthetic import make_texture

    tex = make_texture(size, seed=1).astype(np.float32)
    half = cv2.resize(tex, (size // 2, size // 2), interpolation=cv2.INTER_AREA)
    return [(torch.from_numpy(np.ascontiguousarray(t)) - mean)[None, None] / std for t in (tex, half)]


def score_map_error(approx: torch.Tensor, exact: torch.Tensor) -> float:
    """max |approx − exact| ÷ (max − min of exact), score maps of any shape."""
    span = float(exact.max() - exact.min())
    err = float((approx.double() - exact.double()).abs().max())
    return err / span if span > 0 else err


def rank_errors(weight: torch.Tensor, bias: torch.Tensor | None, probes: list[torch.Tensor],
                ranks=None, num_sum: int = 4, num_max: int = 4) -> dict[int, float]:
    """Score-map error (``score_map_error`` of the GHH output, worst over the probes) at each rank.
    Every term's response is computed once (float32, so errors below ~1e-5 are rounding) and the ranks
    are partial sums."""
    bank = merge_duplicates(weight, bias)
    ranks = list(ranks if ranks is not None else range(1, bank.kernel_size + 1))
    plan = GhhPlan(bank, num_sum, num_max)
    sep = separable_factors(bank, max(ranks))
    out = {r: 0.0 for r in ranks}
    with torch.no_grad():
        for p in probes:
            p = p.detach().float().cpu()
            score = plan(dense_responses(p, bank))
            terms = separable_terms_torch(p, sep)
            for r in ranks:
                keep = sep.component < r
                approx = plan(sum_terms(terms[:, keep], sep.subset(keep)))
                out[r] = max(out[r], score_map_error(approx, score))
    return out


def choose_rank(weight: torch.Tensor, bias: torch.Tensor | None, tolerance: float, probes: list[torch.Tensor],
                max_rank: int | None = None, num_sum: int = 4, num_max: int = 4) -> tuple[int | None, float | None]:
    """Smallest rank r ≤ max_rank (default k) whose score-map error on the probes is ≤ tolerance, with
    that error; (None, None) if none is."""
    top = max_rank if max_rank is not None else _filters(weight).shape[-1]
    if top < 1:
        return None, None
    errors = rank_errors(weight, bias, probes, range(1, top + 1), num_sum, num_max)
    for r in range(1, top + 1):
        if errors[r] <= tolerance:
            return r, errors[r]
    return None, None


def max_useful_rank(weight: torch.Tensor | MergedBank, terms_cost, budget: float) -> int:
    """Largest rank whose separable terms cost less than ``budget`` (``terms_cost(P)`` for P terms); 0 if
    none, and no higher than the rank at which every filter has all its numerical terms."""
    bank = weight if isinstance(weight, MergedBank) else merge_duplicates(weight)
    best, previous = 0, 0
    for r in range(1, bank.kernel_size + 1):
        terms = separable_factors(bank, r).terms
        if terms == previous or terms_cost(terms) >= budget:
            break
        best, previous = r, terms
    return best


# ---------------------------------------------------------------------------------------------------
# The module that replaces DET
# ---------------------------------------------------------------------------------------------------

MODES = ("exact", "separable", "fft", "dense")


class FastDET(nn.Module):
    """DET with a cheaper convolution, built from a loaded DET module; same input (B, 1, H, W) and
    output (B, 1, H − 24, W − 24) as DET, through the distinct filters and a ``GhhPlan``.

    ``mode``:
      * ``exact``: the cheaper exact route by the measured costs (``COSTS``): torch.fft or PyTorch's
        dense convolution, over the distinct filters;
      * ``separable``: the separable terms of the smallest rank whose score map on the probes is within
        ``tolerance`` × its range, where that is cheaper than the exact route; else the exact route;
      * ``fft``: torch.fft (exact); ``dense``: PyTorch's dense convolution over the distinct filters.
    ``engine``: ``auto`` (opencv on the CPU where cv2 imports, else torch), ``opencv`` or ``torch``.
    ``probes``: normalised images for the rank choice (default: the synthetic texture normalised by
    ``mean`` and ``std``, the DET card's). ``rank``: force a separable rank (no tolerance, no cost).
    ``describe()`` says what was chosen and why. The filters are read once, at construction; running
    after the DET module's weights changed in place raises.
    """

    def __init__(self, det: nn.Module, mode: str = "separable", tolerance: float = DEFAULT_TOLERANCE,
                 probes: list[torch.Tensor] | None = None, engine: str = "auto", device="cpu",
                 mean: float = 0.0, std: float = 1.0, rank: int | None = None) -> None:
        super().__init__()
        from .det import NUM_MAX, NUM_SUM

        if mode not in MODES:
            raise ValueError(f"DET convolution {mode!r}: one of {', '.join(MODES)}")
        if tolerance < 0:
            raise ValueError(f"tolerance must be >= 0, got {tolerance}")
        self.mode, self.tolerance = mode, float(tolerance)
        device_type = torch.device(device).type
        weight = det.conv.weight.detach()
        bias = det.conv.bias.detach() if det.conv.bias is not None else None
        self.bank = merge_duplicates(weight, bias)
        self.plan = GhhPlan(self.bank, NUM_SUM, NUM_MAX)
        # A snapshot of the weights: changing them in place afterwards (training, load_state_dict) is refused.
        self._source = det.conv
        self._versions = self._weight_versions()
        distinct = len(self.bank.unique)
        if engine == "auto":
            engine = "torch"
            if device_type == "cpu":
                try:
                    import cv2  # noqa: F401
                    engine = "opencv"
                except ImportError:
                    pass
        if engine not in ("opencv", "torch"):
            raise ValueError(f"engine {engine!r}: auto, opencv or torch")
        if engine == "opencv" and device_type != "cpu":
            raise ValueError("the opencv engine runs on the CPU")
        self.engine = engine
        self.rank: int | None = None
        self.error: float | None = None
        self.separable: Separable | None = None
        self._fft: FftResponses | None = None
        self._cache: dict = {}
        cost = COSTS["cuda" if device_type == "cuda" else "cpu"]
        if mode in ("exact", "separable"):
            self.exact_route = "fft" if cost["fft"](distinct) < cost["dense"](distinct) else "dense"
        else:
            self.exact_route = mode
        if mode == "fft" or self.exact_route == "fft":
            self._fft = FftResponses(self.bank)
        exact_cost = cost[self.exact_route](distinct)
        exact_name = f"exact ({self.exact_route} over {distinct} distinct filter{'s' * (distinct != 1)}, GHH plan)"
        if mode != "separable":
            self.reason = exact_name
            return
        if rank is not None:   # forced (measurements, tests)
            self.rank, self.separable = rank, separable_factors(self.bank, rank)
            self.reason = f"rank {rank} forced ({self.separable.terms} terms over {distinct} distinct filters, {engine})"
            return
        terms_cost = cost[f"{engine}_terms"]
        useful = max_useful_rank(self.bank, terms_cost, exact_cost)
        probes = probes if probes is not None else default_probes(mean, std)
        found, err = choose_rank(weight, bias, self.tolerance, probes, useful, NUM_SUM, NUM_MAX) if useful else (None, None)
        if found is not None:
            self.rank, self.error, self.separable = found, err, separable_factors(self.bank, found)
            self.reason = (f"rank {found} ({self.separable.terms} separable terms over {distinct} distinct filters, "
                           f"{engine}): score-map error {err:.2g} of the map's range <= {self.tolerance:g}")
        elif useful:
            self.reason = (f"{exact_name}: no rank up to {useful} (the largest cheaper than exact with {engine}) "
                           f"meets {self.tolerance:g}")
        else:
            self.reason = f"{exact_name}: no separable rank is cheaper with {engine}"

    def describe(self) -> str:
        return self.reason

    def _weight_versions(self) -> tuple:
        try:
            return tuple(p._version for p in (self._source.weight, self._source.bias) if p is not None)
        except RuntimeError:   # inference tensors keep no version counter (and cannot change in place)
            return ()

    @property
    def exact(self) -> bool:
        return self.separable is None

    def _on(self, x: torch.Tensor):
        """The bank or the separable form with tensors on x's device and dtype (cached)."""
        key = (str(x.device), x.dtype)
        if key not in self._cache:
            if self.separable is not None:
                s = self.separable
                self._cache[key] = Separable(s.vertical.to(x), s.horizontal.to(x), s.owner.to(x.device),
                                             s.component, s.rank, s.distinct)
            else:
                b = self.bank
                self._cache[key] = MergedBank(b.unique.to(x), b.index, b.sign, b.bias)
        return self._cache[key]

    def responses(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) → (B, U, H − k + 1, W − k + 1) responses of the distinct filters."""
        if self._weight_versions() != self._versions:
            raise RuntimeError("the DET weights changed after FastDET was built from them: build it again")
        if self.separable is not None:
            if self.engine == "opencv" and x.device.type == "cpu":
                return separable_responses_opencv(x, self.separable)
            return separable_responses_torch(x, self._on(x))
        if self._fft is not None:
            return self._fft(x)
        return dense_responses(x, self._on(x))

    def conv(self, x: torch.Tensor) -> torch.Tensor:
        """(B, F, H − k + 1, W − k + 1): what ``DET.conv`` gives (approximated where separable)."""
        return self.bank.expand(self.responses(x))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.plan(self.responses(image))
