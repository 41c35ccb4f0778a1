"""Deep Compression's training-time half: prune, retrain with the zeros held, share weights,
train the shared centroids (Han et al. 2016, §2–3), inside the user's own training loop.

The model keeps its ordinary parameters and state-dict keys; two hooks per compressed weight
hold the constraints whatever the optimizer does:

- a gradient hook: a pruned position's gradient is 0; a shared weight's gradient becomes the
  sum of its cluster's gradients (the paper's centroid gradient), the same for every member;
- an optimizer step post-hook: pruned positions are set back to 0 and each cluster to one value
  (its members' mean, computed exactly in float64: members that moved alike, as every
  elementwise optimizer moves equal weights with equal gradients and equal state, stay exactly
  what they were).

So after every ``optimizer.step()`` a shared layer holds at most 2**bits distinct values plus
its zeros, which is what :func:`nnar.torch.pack` stores, exactly.
"""

from __future__ import annotations

import fnmatch
from typing import Any, Iterable, Mapping

import numpy as np

from ..errors import InvalidInput
from ..formats.torch import _torch
from ..quant import kmeans
from ..quant import prune as magnitude

INITS = ("linear", "optimal")
SCOPES = ("layer", "global")
REDUCTIONS = ("sum", "mean")


def _numpy(t) -> np.ndarray:
    return t.detach().to("cpu").float().numpy().reshape(-1)


def selected(model, include: Iterable[str] | None, who: str) -> dict[str, Any]:
    """The weights to compress: those matching ``include`` (glob patterns of parameter names),
    by default every parameter of two or more dimensions (linear and convolution weights)."""
    patterns = list(include) if include is not None else None
    out: dict[str, Any] = {}
    for name, p in model.named_parameters():
        if p.dim() >= 2 if patterns is None else any(fnmatch.fnmatchcase(name, g) for g in patterns):
            if not p.is_floating_point():
                raise InvalidInput(f"parameter {name!r}: expected a floating-point weight, found {p.dtype}")
            out[name] = p
    if not out:
        raise InvalidInput(f"{who}: no parameter to compress (expected a weight of 2 or more dimensions, "
                           f"or one matching include={patterns!r})")
    return out


def cluster(values: np.ndarray, live: np.ndarray, bits: int, init: str) -> tuple[np.ndarray, np.ndarray]:
    """k-means of ``values[live]`` into 2**bits shared values: (each value's cluster, -1 where
    not live; the sorted table of shared values)."""
    idx = np.full(values.size, -1, np.int64)
    table = np.zeros(0, np.float32)
    if live.any():
        table = kmeans.fit(values[live], 1 << bits, init=init)
        idx[live] = kmeans.assign(values[live], table)
    return idx, table


class Compression:
    """Masks and cluster assignments of a model's weights, kept through training.

    >>> comp = nnar.torch.Compression(model, optimizer)             # doctest: +SKIP
    >>> comp.prune(0.9)          # every weight matrix / kernel to 90% zeros; retrain ...
    >>> comp.share(bits=5)       # k-means per layer; retrain: only centroids move ...
    >>> nnar.torch.pack(model, "model.nnar")                        # doctest: +SKIP

    ``include`` (glob patterns of parameter names) chooses the weights compressed; by default
    every floating-point parameter of two or more dimensions (linear and convolution weights;
    biases and norms stay as trained, stored losslessly). ``optimizer`` (or :meth:`attach`)
    gets the post-step hook; without one, call :meth:`apply` after each update.
    """

    def __init__(self, model, optimizer=None, *, include: Iterable[str] | None = None):
        torch = _torch()
        if not isinstance(model, torch.nn.Module):
            raise InvalidInput(f"model: expected a torch.nn.Module, found {type(model).__name__}")
        self.model = model
        self.params: dict[str, Any] = selected(model, include, "Compression")
        self.masks: dict[str, Any] = {}     # name → bool tensor, True where the weight survives
        self.clusters: dict[str, Any] = {}  # name → int64 tensor over the flat weight: cluster, -1 if pruned
        self.bits: dict[str, int] = {}
        self.reduce = "sum"
        self._optimizers: list = []
        self._handles: list = [p.register_hook(self._grad_hook(n)) for n, p in self.params.items()]
        if optimizer is not None:
            self.attach(optimizer)

    # -- the constraints ------------------------------------------------------------------------

    def _grad_hook(self, name: str):
        def hook(grad):
            idx = self.clusters.get(name)
            if idx is not None:
                return self._tied(grad, idx, 1 << self.bits[name])
            mask = self.masks.get(name)
            return grad if mask is None else grad * mask
        return hook

    def _tied(self, grad, idx, k: int):
        """Every member's gradient becomes its cluster's summed (or mean) gradient; pruned: 0."""
        torch = _torch()
        flat = grad.reshape(-1)
        live = idx >= 0
        sums = torch.zeros(k, dtype=flat.dtype, device=flat.device).index_add_(0, idx[live], flat[live])
        if self.reduce == "mean":
            counts = torch.bincount(idx[live], minlength=k).clamp_(min=1).to(flat.dtype)
            sums = sums / counts
        out = torch.zeros_like(flat)
        out[live] = sums[idx[live]]
        return out.reshape(grad.shape)

    def attach(self, optimizer) -> "Compression":
        """Re-impose masks and clusters after every ``optimizer.step()``."""
        if not hasattr(optimizer, "register_step_post_hook"):
            raise InvalidInput(f"optimizer: expected a torch.optim.Optimizer, found {type(optimizer).__name__}")
        self._optimizers.append(optimizer)
        self._handles.append(optimizer.register_step_post_hook(lambda *_: self.apply()))
        return self

    def apply(self) -> None:
        """Set pruned weights to 0 and every cluster to one value (its members' mean)."""
        torch = _torch()
        with torch.no_grad():
            for name, p in self.params.items():
                idx = self.clusters.get(name)
                if idx is not None:
                    flat = p.data.reshape(-1)
                    live = idx >= 0
                    k = 1 << self.bits[name]
                    wide = flat[live].to(torch.float64)
                    sums = torch.zeros(k, dtype=torch.float64, device=flat.device).index_add_(0, idx[live], wide)
                    counts = torch.bincount(idx[live], minlength=k).clamp_(min=1)
                    centroids = (sums / counts).to(flat.dtype)
                    new = torch.zeros_like(flat)
                    new[live] = centroids[idx[live]]
                    p.data.copy_(new.reshape(p.shape))
                elif name in self.masks:
                    p.data.mul_(self.masks[name])

    def _reset_state(self, name: str, mask=None) -> None:
        """Optimizer state of a weight whose constraint just changed: momenta of pruned positions
        zeroed (else they would push the zeros again), or, once shared, cleared (the centroids
        start as fresh parameters, their state no longer a member's)."""
        p = self.params[name]
        for opt in self._optimizers:
            state = opt.state.get(p)
            if not state:
                continue
            if mask is None:
                state.clear()
                continue
            for key, v in state.items():
                if hasattr(v, "shape") and tuple(v.shape) == tuple(p.shape):
                    v.mul_(mask)

    def remove(self) -> None:
        """Remove the hooks (masks and clusters are kept for :func:`nnar.torch.pack`)."""
        for h in self._handles:
            h.remove()
        self._handles = []

    # -- pruning --------------------------------------------------------------------------------

    def _resolve(self, amount, what: str) -> dict[str, Any]:
        """A value per parameter name from one value or a mapping of names / glob patterns."""
        if not isinstance(amount, Mapping):
            return {n: amount for n in self.params}
        out: dict[str, Any] = {}
        for pattern, value in amount.items():
            hits = [n for n in self.params if fnmatch.fnmatchcase(n, pattern)]
            if not hits:
                raise InvalidInput(f"{what}: {pattern!r} matches no compressed weight (expected one of "
                                   f"{', '.join(sorted(self.params))[:200]})")
            for n in hits:
                out.setdefault(n, value)
        return out

    def prune(self, amount: float | Mapping[str, float], *, scope: str = "layer") -> dict[str, float]:
        """Prune by magnitude to ``amount``, the fraction of zeros: per layer (``scope="layer"``),
        over every compressed weight at once (``"global"``: one threshold), or per layer from a
        mapping (name or glob → fraction, e.g. from :func:`nnar.torch.allocate`). Cumulative:
        a pruned weight stays pruned, so call it again with a larger amount between rounds of
        retraining (iterative pruning). Returns each layer's fraction of zeros."""
        if scope not in SCOPES:
            raise InvalidInput(f"scope: expected one of {', '.join(SCOPES)}, found {scope!r}")
        if self.clusters:
            raise InvalidInput("prune: the weights are already shared; prune before share()")
        targets = self._resolve(amount, "prune")
        for n, a in targets.items():
            if isinstance(a, bool) or not isinstance(a, (int, float)) or not 0 <= a < 1:
                raise InvalidInput(f"prune {n!r}: expected a fraction in [0, 1), found {a!r}")
        if scope == "global":
            if isinstance(amount, Mapping):
                raise InvalidInput("prune: scope='global' takes one fraction for every weight, found a mapping")
            threshold = magnitude.global_threshold([_numpy(self.params[n]) for n in targets], float(amount))
            survivors = {n: magnitude.survivors_for_threshold(_numpy(self.params[n]), threshold) for n in targets}
        else:
            survivors = {n: magnitude.survivors_for_sparsity(_numpy(self.params[n]), float(a))
                         for n, a in targets.items()}
        torch = _torch()
        for n, keep in survivors.items():
            p = self.params[n]
            mask = torch.from_numpy(keep.reshape(tuple(p.shape))).to(device=p.device, dtype=p.dtype)
            if n in self.masks:  # never revive a pruned weight
                mask = mask * self.masks[n]
            self.masks[n] = mask
            self._reset_state(n, mask)
        self.apply()
        return self.sparsity()

    def sparsity(self) -> dict[str, float]:
        """The fraction of zeros of each compressed weight, as it is now."""
        return {n: 1.0 - int(p.count_nonzero()) / max(p.numel(), 1) for n, p in self.params.items()}

    # -- weight sharing -------------------------------------------------------------------------

    def share(self, bits: int | Mapping[str, int], *, init: str = "optimal", reduce: str = "sum") -> None:
        """Cluster each layer's surviving weights into ``2**bits`` shared values (k-means; ``init``
        ``"linear"`` is the paper's linear start, ``"optimal"`` nnar's near-optimal 1-D
        clustering), assignments fixed from now on. ``bits`` is one width (1–8) or a mapping of
        names / globs to widths; weights it does not name stay unshared. Training then moves only
        the centroids: each member's gradient is its cluster's ``sum`` (the paper) or ``mean``."""
        if init not in INITS:
            raise InvalidInput(f"init: expected one of {', '.join(INITS)}, found {init!r}")
        if reduce not in REDUCTIONS:
            raise InvalidInput(f"reduce: expected one of {', '.join(REDUCTIONS)}, found {reduce!r}")
        self.reduce = reduce
        torch = _torch()
        for n, b in self._resolve(bits, "share").items():
            if isinstance(b, bool) or not isinstance(b, int) or not 1 <= b <= 8:
                raise InvalidInput(f"share {n!r}: bits: expected an integer in [1, 8], found {b!r}")
            p = self.params[n]
            flat = _numpy(p)
            idx, _ = cluster(flat, flat != 0 if n in self.masks else np.ones(flat.size, bool), b, init)
            self.clusters[n] = torch.from_numpy(idx).to(p.device)
            self.bits[n] = b
            self._reset_state(n)
        self.apply()

    def codebook(self, name: str) -> np.ndarray:
        """The current shared values of a shared weight (float32, by cluster number)."""
        if name not in self.clusters:
            raise InvalidInput(f"codebook: {name!r} is not shared (shared: {', '.join(self.clusters) or 'none'})")
        idx = self.clusters[name].cpu().numpy()
        flat = _numpy(self.params[name])
        out = np.zeros(1 << self.bits[name], np.float32)
        out[idx[idx >= 0]] = flat[idx >= 0]
        return out

    def summary(self) -> str:
        rows = [f"{'weight':32} {'shape':>14} {'zeros':>7} {'shared':>7}"]
        for n, p in self.params.items():
            z = 1.0 - int(p.count_nonzero()) / max(p.numel(), 1)
            s = f"{self.bits[n]}-bit" if n in self.bits else "-"
            rows.append(f"{n:32} {'x'.join(map(str, p.shape)):>14} {z:>6.1%} {s:>7}")
        return "\n".join(rows)
