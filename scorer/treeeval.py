"""Batched evaluation of a FraudModel's tree ensembles, without sklearn at score time.

Stock sklearn pays milliseconds of validation and dispatch per call, which dominates the
scorer's micro-batches. `compile_model` flattens every tree of a component into one
array of 16-byte node records once; `CompiledModel.score` walks them with a JIT-compiled
loop (numba) per component and hands the raw scores to the model's own `combine()`, so
calibration and weights stay shared code with `FraudModel.score`.

Exactness: each component repeats sklearn's arithmetic operation for operation (the
float32 cast of the input for IsolationForest, the same per-leaf term, the additions in
tree order starting from the same value, scipy's expit), so results match bit for bit.

Layout and walk: nodes are numbered breadth-first per tree so the right child is always
`left + 1`, and the next node is `left + (x > threshold)`, with no branch. A leaf has a
NaN threshold (every comparison is False, so "right") and `left = itself - 1`: it is its
own child, so a tree can be walked a fixed number of levels without a leaf test. The
walk goes level by level over all rows of a block, so many rows' loads are in flight.
Trees whose rows mostly stop early (boosting trees are very lopsided) are walked in
stages: after a few levels the rows that reached a leaf are dropped from the block.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy.special import expit
from sklearn.ensemble import HistGradientBoostingClassifier, IsolationForest

from fraudcore.logs import kv
from fraudcore.model import Component, FraudModel

try:
    import numba
except ImportError:  # the numpy path below is exact too, only slower
    numba = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

Backend = Literal["numba", "numpy"]
DEFAULT_BACKEND: Backend = "numba" if numba is not None else "numpy"
NODE_DTYPE = np.dtype([("thr", np.float64), ("feat", np.uint32), ("left", np.uint32)])
# Rows walked together: the block's feature rows and one tree stay in L2 (1024 measured
# best at 10k-row batches; below ~1000 rows it makes no difference).
ROW_BLOCK = 1024
# Levels walked between two compactions of a lopsided forest; measured best on our HGB.
STAGE_LEVELS = 2
# Compact only when rows visit less than this share of the levels a fixed walk costs:
# a staged step costs about twice a plain one.
COMPACT_BELOW = 0.5
# Bound on rows x trees per step of the numpy path (memory of its index matrices).
_NUMPY_CELLS = 1 << 18


class UnsupportedModelError(ValueError):
    """The model contains something this evaluator cannot reproduce exactly."""


@dataclass(frozen=True)
class FlatForest:
    """All trees of one component; node 0 is a dummy so that no leaf has left = -1."""

    nodes: np.ndarray  # NODE_DTYPE records
    nan_left: np.ndarray  # bool per node: a NaN input goes left (read only for NaN)
    value: np.ndarray  # float64 per node: the term a leaf adds (0 at inner nodes)
    roots: np.ndarray  # uint32 per tree
    depths: np.ndarray  # uint32 per tree: levels of its deepest leaf
    stage: int  # levels between compactions; 0 = walk every tree straight down
    # float64 per node: the mean leaf value below it, weighted by training rows (at a
    # leaf, its value); a split's step from parent to child is what it contributes.
    expect: np.ndarray

    @property
    def n_nodes(self) -> int:
        return int(self.nodes.shape[0])


@dataclass
class TreeArrays:
    """One tree as sklearn stores it, with node 0 as the root and left == -1 at leaves."""

    feature: np.ndarray
    threshold: np.ndarray
    nan_left: np.ndarray
    left: np.ndarray
    right: np.ndarray
    leaf_value: np.ndarray  # read at leaves only
    samples: np.ndarray  # training rows reaching each node (to predict path lengths)


def breadth_first(left: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Node ids in breadth-first order, siblings adjacent (left then right), and the
    depth of each node in edges from the root."""
    order = [np.zeros(1, dtype=np.int64)]
    depth = np.zeros(left.shape[0], dtype=np.int64)
    frontier = order[0]
    level = 0
    while True:
        inner = frontier[left[frontier] >= 0]
        if inner.size == 0:
            break
        level += 1
        frontier = np.stack([left[inner], right[inner]], axis=1).ravel().astype(np.int64)
        depth[frontier] = level
        order.append(frontier)
    return np.concatenate(order), depth


def flatten(trees: list[TreeArrays]) -> FlatForest:
    nodes = [np.array([(np.nan, 0, 0)], dtype=NODE_DTYPE)]
    nan_left, value, expect = [np.zeros(1, dtype=np.bool_)], [np.zeros(1)], [np.zeros(1)]
    roots, depths = [], []
    offset, visited, walked = 1, 0.0, 0
    for tree in trees:
        order, depth = breadth_first(tree.left, tree.right)
        position = np.empty_like(order)
        position[order] = np.arange(order.shape[0]) + offset
        leaf = (tree.left < 0)[order]
        part = np.empty(order.shape[0], dtype=NODE_DTYPE)
        part["thr"] = np.where(leaf, np.nan, tree.threshold[order])
        part["feat"] = np.where(leaf, 0, tree.feature[order])
        part["left"] = np.where(
            leaf, position[order] - 1, position[np.maximum(tree.left, 0)][order]
        )
        nodes.append(part)
        nan_left.append(np.where(leaf, False, tree.nan_left[order] != 0))
        value.append(np.where(leaf, tree.leaf_value[order], 0.0))
        expect.append(expectations(tree, order)[order])
        roots.append(offset)
        depths.append(int(depth.max()))
        leaves = tree.left < 0
        visited += float((tree.samples[leaves] * depth[leaves]).sum() / max(tree.samples[0], 1))
        walked += depths[-1]
        offset += order.shape[0]
    if offset >= np.iinfo(np.uint32).max:
        raise UnsupportedModelError(f"{offset} nodes exceed the uint32 node index")
    return FlatForest(
        nodes=np.concatenate(nodes),
        nan_left=np.concatenate(nan_left),
        value=np.concatenate(value).astype(np.float64),
        roots=np.asarray(roots, dtype=np.uint32),
        depths=np.asarray(depths, dtype=np.uint32),
        stage=STAGE_LEVELS if visited < COMPACT_BELOW * walked else 0,
        expect=np.concatenate(expect).astype(np.float64),
    )


def expectations(tree: TreeArrays, order: np.ndarray) -> np.ndarray:
    """Per node (sklearn's numbering): the training-row-weighted mean of the leaf values
    below it. `order` is breadth-first, so children come after their parent: walking it
    backwards fills every child before its parent."""
    mean = np.where(tree.left < 0, tree.leaf_value, 0.0).astype(np.float64)
    weight = np.maximum(tree.samples.astype(np.float64), 0.0)
    for node in order[::-1]:
        left, right = tree.left[node], tree.right[node]
        if left < 0:
            continue
        total = weight[left] + weight[right]
        mean[node] = (
            (weight[left] * mean[left] + weight[right] * mean[right]) / total
            if total > 0
            else 0.5 * (mean[left] + mean[right])
        )
    return mean


def average_path_length(n: np.ndarray) -> np.ndarray:
    """Mean path length of an unsuccessful BST search among n points (iForest's c(n))."""
    n = np.asarray(n, dtype=np.float64)
    out = np.zeros_like(n)
    out[n == 2] = 1.0
    big = n > 2
    out[big] = 2.0 * (np.log(n[big] - 1.0) + np.euler_gamma) - 2.0 * (n[big] - 1.0) / n[big]
    return out


@dataclass(frozen=True)
class CompiledComponent:
    kind: str
    forest: FlatForest
    start: float  # the sum's initial value (HGB baseline)
    float32_input: bool  # sklearn's trees compare the input cast to float32
    finish: Callable[[np.ndarray], np.ndarray]  # leaf sum -> the component's raw score
    # The raw score's margin, a quantity the leaf sum moves linearly: log-odds for
    # boosting, log of the anomaly score for the forest; d(margin) = per_unit * d(sum).
    margin: Callable[[np.ndarray], np.ndarray]
    per_unit: float


def _isolation_forest(est: IsolationForest, n_features: int) -> CompiledComponent:
    trees = []
    for tree_est, subset in zip(est.estimators_, est.estimators_features_, strict=True):
        tree = tree_est.tree_
        left = np.asarray(tree.children_left, dtype=np.int64)
        feature = np.asarray(tree.feature, dtype=np.int64)
        # sklearn reads columns through the tree's feature subset only when the subset is
        # smaller than the input (max_features < 1.0); otherwise the tree saw X as is.
        if len(subset) != n_features:
            feature = np.where(left >= 0, np.asarray(subset)[np.maximum(feature, 0)], 0)
        samples = np.asarray(tree.n_node_samples, dtype=np.float64)
        # sklearn's per-tree term: depth counted from 1 at the root, plus c(samples in the
        # leaf), minus 1, in that order so the sums agree bit for bit.
        path = breadth_first(left, np.asarray(tree.children_right))[1] + 1
        term = path + average_path_length(samples) - 1.0
        trees.append(
            TreeArrays(
                feature,
                np.asarray(tree.threshold),
                np.asarray(tree.missing_go_to_left),
                left,
                np.asarray(tree.children_right, dtype=np.int64),
                term,
                samples,
            )
        )
    c_psi = float(average_path_length(np.array([est.max_samples_]))[0])
    denominator = len(est.estimators_) * c_psi

    def finish(depth_sum: np.ndarray) -> np.ndarray:
        if denominator == 0:  # one training sample: sklearn defines the ratio as 1
            return np.full_like(depth_sum, 0.5)
        # component_raw negates score_samples, which is -2 ** (-mean depth / c(psi)).
        return np.asarray(2 ** (-(depth_sum / denominator)), dtype=np.float64)

    def margin(raw: np.ndarray) -> np.ndarray:
        return np.log(np.maximum(raw, 1e-300))

    # log(2 ** (-sum / denominator)): deeper paths, a lower anomaly score.
    per_unit = -np.log(2.0) / denominator if denominator else 0.0
    return CompiledComponent(
        "isolation_forest", flatten(trees), 0.0, True, finish, margin, per_unit
    )


def _hist_gradient_boosting(est: HistGradientBoostingClassifier) -> CompiledComponent:
    if est.n_trees_per_iteration_ != 1 or len(est.classes_) != 2:
        raise UnsupportedModelError(
            f"only binary classification is supported, got {len(est.classes_)} classes"
        )
    if est.is_categorical_ is not None and np.any(est.is_categorical_):
        raise UnsupportedModelError(
            "categorical features are not supported (sklearn re-encodes them before the trees)"
        )
    trees = []
    for (predictor,) in est._predictors:
        nodes = predictor.nodes
        if np.any(nodes["is_categorical"]):
            raise UnsupportedModelError("categorical splits are not supported")
        leaf = nodes["is_leaf"] != 0
        trees.append(
            TreeArrays(
                nodes["feature_idx"].astype(np.int64),
                nodes["num_threshold"],
                nodes["missing_go_to_left"],
                np.where(leaf, -1, nodes["left"].astype(np.int64)),
                np.where(leaf, -1, nodes["right"].astype(np.int64)),
                nodes["value"],
                nodes["count"].astype(np.float64),
            )
        )
    # sklearn starts the sum at the baseline and adds the trees in order; so do we.
    baseline = float(np.asarray(est._baseline_prediction).ravel()[0])

    def finish(raw: np.ndarray) -> np.ndarray:
        return np.asarray(expit(raw), dtype=np.float64)  # the binomial loss' inverse link

    def margin(raw: np.ndarray) -> np.ndarray:
        clipped = np.clip(raw, 1e-15, 1 - 1e-15)
        return np.asarray(np.log(clipped / (1 - clipped)), dtype=np.float64)

    return CompiledComponent(
        "hist_gradient_boosting", flatten(trees), baseline, False, finish, margin, 1.0
    )


def compile_component(component: Component, n_features: int) -> CompiledComponent:
    est: Any = component.estimator
    if component.kind == "isolation_forest":
        if not isinstance(est, IsolationForest):
            raise UnsupportedModelError(f"holds {type(est).__name__}, not an IsolationForest")
        compiled = _isolation_forest(est, n_features)
    elif component.kind == "hist_gradient_boosting":
        if not isinstance(est, HistGradientBoostingClassifier):
            raise UnsupportedModelError(
                f"holds {type(est).__name__}, not a HistGradientBoostingClassifier"
            )
        compiled = _hist_gradient_boosting(est)
    else:
        raise UnsupportedModelError(f"unsupported component kind {component.kind!r}")
    if est.n_features_in_ != n_features:
        raise UnsupportedModelError(
            f"fitted on {est.n_features_in_} features, the model has {n_features}"
        )
    return compiled


def _walk(
    x: np.ndarray,
    nodes: np.ndarray,
    nan_left: np.ndarray,
    value: np.ndarray,
    roots: np.ndarray,
    depths: np.ndarray,
    stage: int,
    has_nan: bool,
    out: np.ndarray,
) -> None:
    """out[row] += leaf value of each tree, trees in order. Compiled by numba."""
    one = np.uint32(1)
    size = min(x.shape[0], ROW_BLOCK)
    node = np.empty(size, dtype=np.uint32)
    active = np.empty(size, dtype=np.uint32)
    for start in range(0, x.shape[0], ROW_BLOCK):
        block = x[start : start + ROW_BLOCK]
        rows = block.shape[0]
        for t in range(roots.shape[0]):
            root = roots[t]
            for i in range(rows):
                node[i] = root
            remaining = int(depths[t])
            count = rows
            first = True
            while remaining > 0 and count > 0:
                levels = remaining if stage == 0 else min(stage, remaining)
                for _ in range(levels):
                    for k in range(count):
                        i = k if first else active[k]
                        nd = node[i]
                        v = block[i, nodes[nd].feat]
                        right = not (v <= nodes[nd].thr)
                        if has_nan and v != v and nan_left[nd]:
                            right = False
                        node[i] = nodes[nd].left + np.uint32(right)
                remaining -= levels
                if remaining > 0:  # keep the rows that have not reached a leaf
                    kept = 0
                    for k in range(count):
                        i = k if first else active[k]
                        active[kept] = i
                        kept += nodes[node[i]].left + one != node[i]
                    count = kept
                    first = False
            for i in range(rows):
                out[start + i] += value[node[i]]


def _jit(function: Callable[..., None]) -> Callable[..., None] | None:
    if numba is None:
        return None
    try:  # cache next to this file, or in NUMBA_CACHE_DIR / the user's cache dir
        jitted: Callable[..., None] = numba.njit(cache=True, nogil=True)(function)
    except RuntimeError as exc:  # no writable cache location: compile at every start
        log.warning("numba cache unavailable, compiling in memory %s", kv(error=exc))
        jitted = numba.njit(cache=False, nogil=True)(function)
    return jitted


_walk_jit = _jit(_walk)


def _attribute(
    x: np.ndarray,
    nodes: np.ndarray,
    nan_left: np.ndarray,
    expect: np.ndarray,
    roots: np.ndarray,
    has_nan: bool,
    out: np.ndarray,
) -> None:
    """Path attribution (Saabas): along each row's path, every split adds the step of the
    expectation, child minus parent, to its feature; the roots' expectations go to the
    last column. Per row the columns sum to the leaf sum. Compiled by numba."""
    one = np.uint32(1)
    bias = out.shape[1] - 1
    for r in range(x.shape[0]):
        for t in range(roots.shape[0]):
            nd = roots[t]
            out[r, bias] += expect[nd]
            while nodes[nd].left + one != nd:  # a leaf is its own child
                feature = nodes[nd].feat
                v = x[r, feature]
                right = not (v <= nodes[nd].thr)
                if has_nan and v != v and nan_left[nd]:
                    right = False
                child = nodes[nd].left + np.uint32(right)
                out[r, feature] += expect[child] - expect[nd]
                nd = child


_attribute_jit = _jit(_attribute)


def _walk_numpy(x: np.ndarray, forest: FlatForest, has_nan: bool, out: np.ndarray) -> None:
    """The same fixed-depth walk, vectorised over (rows x trees) one level at a time."""
    n_trees = forest.roots.shape[0]
    levels = int(forest.depths.max()) if n_trees else 0
    thr, feat, left = forest.nodes["thr"], forest.nodes["feat"], forest.nodes["left"]
    step = max(1, _NUMPY_CELLS // max(n_trees, 1))
    for start in range(0, x.shape[0], step):
        block = x[start : start + step]
        rows = np.arange(block.shape[0])[:, None]
        node = np.broadcast_to(forest.roots, (block.shape[0], n_trees)).astype(np.intp)
        for _ in range(levels):
            v = block[rows, feat[node]]
            right = ~(v <= thr[node])
            if has_nan:
                right &= ~(np.isnan(v) & forest.nan_left[node])
            node = left[node] + right
        leaf_values = forest.value[node]
        acc = out[start : start + step]
        for t in range(n_trees):  # tree order, like sklearn, so the sums round alike
            acc += leaf_values[:, t]


def _as_trees_see_it(compiled: CompiledComponent, prepared: np.ndarray) -> np.ndarray:
    if not compiled.float32_input:
        return prepared
    with np.errstate(over="ignore"):  # beyond float32 range becomes inf, as in sklearn
        return prepared.astype(np.float32).astype(np.float64)


def component_attribution(compiled: CompiledComponent, prepared: np.ndarray) -> np.ndarray:
    """(rows, features + 1): each feature's share of the component's leaf sum, and in the
    last column the rest (the roots' expectations plus the start value)."""
    x = _as_trees_see_it(compiled, prepared)
    f = compiled.forest
    out = np.zeros((x.shape[0], x.shape[1] + 1), dtype=np.float64)
    out[:, -1] = compiled.start
    attribute = _attribute_jit if _attribute_jit is not None else _attribute
    attribute(x, f.nodes, f.nan_left, f.expect, f.roots, bool(np.isnan(x).any()), out)
    return out


def component_raw(
    compiled: CompiledComponent, prepared: np.ndarray, backend: Backend = DEFAULT_BACKEND
) -> np.ndarray:
    """Raw score of one compiled component for C-contiguous float64 rows (NaN allowed)."""
    return compiled.finish(leaf_sum(compiled, prepared, backend))


def leaf_sum(
    compiled: CompiledComponent, prepared: np.ndarray, backend: Backend = DEFAULT_BACKEND
) -> np.ndarray:
    """The start value plus every tree's leaf value, per row, before `finish`."""
    x = _as_trees_see_it(compiled, prepared)
    has_nan = bool(np.isnan(x).any())
    out = np.full(x.shape[0], compiled.start, dtype=np.float64)
    f = compiled.forest
    if backend == "numba":
        if _walk_jit is None:
            raise RuntimeError("backend 'numba' requested but numba is not installed")
        _walk_jit(x, f.nodes, f.nan_left, f.value, f.roots, f.depths, f.stage, has_nan, out)
    else:
        _walk_numpy(x, f, has_nan, out)
    return out


class CompiledModel:
    """A FraudModel whose score() walks flattened trees; results equal model.score()."""

    def __init__(
        self, model: FraudModel, components: list[CompiledComponent], backend: Backend
    ) -> None:
        self.model = model
        self.components = components
        self.backend: Backend = backend
        self.n_features = len(model.feature_names)

    def raws(self, features: np.ndarray) -> list[np.ndarray]:
        """The raw score of every component (before calibration)."""
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"features: expected shape (n, {self.n_features}), got {x.shape}")
        prepared = np.ascontiguousarray(self.model.prepare(x))
        return [component_raw(c, prepared, self.backend) for c in self.components]

    def score(self, features: np.ndarray) -> np.ndarray:
        raws = self.raws(features)
        if raws[0].shape[0] == 0:
            return np.empty(0, dtype=np.float64)
        return np.asarray(self.model.combine(raws), dtype=np.float64)

    def contributions(self, features: np.ndarray) -> np.ndarray:
        """(rows, features): how much each feature raised (> 0) or lowered the score of
        each row, by path attribution in every component's margin, each component's
        share weighted as in the ensemble and measured against the spread of its
        training margins (median to 99th percentile), so components compare."""
        x = np.asarray(features, dtype=np.float64)
        prepared = np.ascontiguousarray(self.model.prepare(x))
        total = np.zeros(x.shape, dtype=np.float64)
        weights = sum(c.weight for c in self.model.components)
        for component, compiled in zip(self.model.components, self.components, strict=True):
            shares = component_attribution(compiled, prepared)[:, :-1] * compiled.per_unit
            total += shares * (component.weight / weights / _margin_spread(component, compiled))
        return total


def _margin_spread(component: Component, compiled: CompiledComponent) -> float:
    if component.calibration is None:
        return 1.0
    grid = np.asarray(component.calibration, dtype=np.float64)
    median, high = compiled.margin(np.quantile(grid, [0.5, 0.99]))
    spread = float(high - median)
    return spread if spread > 0 and np.isfinite(spread) else 1.0


def compile_model(model: FraudModel, backend: Backend = DEFAULT_BACKEND) -> CompiledModel:
    """Flatten every component of `model` and warm the JIT up (compiling it, or loading it
    from numba's cache); raises UnsupportedModelError naming the component and reason."""
    if not model.components:
        raise UnsupportedModelError("the model has no components")
    began = time.perf_counter()
    n_features = len(model.feature_names)
    components = []
    for index, component in enumerate(model.components):
        try:
            components.append(compile_component(component, n_features))
        except UnsupportedModelError as exc:
            raise UnsupportedModelError(f"component {index} ({component.kind}): {exc}") from exc
    compiled = CompiledModel(model, components, backend)
    flattened = time.perf_counter()
    compiled.score(np.zeros((1, n_features)))  # the first batch must not pay the JIT
    compiled.contributions(np.zeros((1, n_features)))  # nor the first alert
    log.info(
        "compiled model %s",
        kv(
            backend=backend,
            components=len(components),
            trees=sum(int(c.forest.roots.shape[0]) for c in components),
            nodes=sum(c.forest.n_nodes for c in components),
            staged=",".join(str(c.forest.stage) for c in components),
            flatten_s=f"{flattened - began:.3f}",
            warm_up_s=f"{time.perf_counter() - flattened:.3f}",
        ),
    )
    return compiled
