"""The compiled evaluator against stock sklearn (FraudModel.score), on both backends.

Models are small and fitted here on random data shaped like ours (33 features, some
columns mostly missing, heavy tails). Rows to score add the hard cases: all-missing rows,
values beyond float32 range, infinities, and values exactly on (and one ulp off) split
thresholds, where a wrong cast or a `<` for `<=` would send a row the other way.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np
import pytest
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    IsolationForest,
    RandomForestClassifier,
)
from threadpoolctl import threadpool_limits

from fraudcore.features import FEATURE_NAMES
from fraudcore.model import Component, FraudModel
from scorer.treeeval import (
    Backend,
    CompiledModel,
    UnsupportedModelError,
    compile_model,
    component_attribution,
    component_raw,
    leaf_sum,
)

BACKENDS: list[Backend] = ["numba", "numpy"]
N_FEATURES = len(FEATURE_NAMES)
SPARSE_COLUMNS = (13, 17, 18, 21, 22)
TOLERANCE = 1e-9
# The reference path casts 1e300 to float32 on purpose (so do we, silently).
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """sklearn's OpenMP threads only fight each other (and Kafka) on a 2-core machine."""
    with threadpool_limits(1):
        yield


def random_features(rows: int, rng: np.random.Generator) -> np.ndarray:
    x = rng.lognormal(mean=1.5, sigma=1.5, size=(rows, N_FEATURES))
    x[:, 1] = rng.integers(0, 24, rows)
    x[:, 2:4] = rng.integers(0, 2, (rows, 2))
    x[:, 4:10] = rng.poisson(2.0, (rows, 6))
    for column in SPARSE_COLUMNS:
        x[rng.random(rows) < 0.5, column] = np.nan
    x[rng.random(x.shape) < 0.03] = np.nan
    return x


def labels(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    signal = np.log1p(np.nan_to_num(x[:, 0])) - 2.0 + 0.4 * np.nan_to_num(x[:, 4])
    signal += np.where(np.isnan(x[:, 17]), 1.0, 0.0)  # missingness itself matters
    return (rng.random(x.shape[0]) < 1 / (1 + np.exp(-signal))).astype(np.int64)


@pytest.fixture(scope="module")
def train(one_thread: None) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(11)
    x = random_features(3000, rng)
    return x, labels(x, rng)


def fraud_model(components: list[Component], x: np.ndarray, nan_columns: int = 0) -> FraudModel:
    """Median imputation; the first `nan_columns` sparse columns impute NaN, so NaN
    reaches the trees through the real path (prepare) too."""
    imputation = {n: float(v) for n, v in zip(FEATURE_NAMES, np.nanmedian(x, axis=0), strict=True)}
    for column in SPARSE_COLUMNS[:nan_columns]:
        imputation[FEATURE_NAMES[column]] = float("nan")
    return FraudModel(FEATURE_NAMES, imputation, 0.5, components)


def thresholds_of(model: FraudModel) -> list[tuple[int, float]]:
    """(column, threshold) of some root and second-level splits of every component."""
    splits = []
    for component in model.components:
        est = component.estimator
        if isinstance(est, IsolationForest):
            for tree, subset in zip(est.estimators_[:10], est.estimators_features_, strict=False):
                for node in (0, 1):
                    f = int(tree.tree_.feature[node])
                    if f >= 0:
                        splits.append((int(subset[f]), float(tree.tree_.threshold[node])))
        else:
            for (predictor,) in est._predictors[:10]:
                for node in predictor.nodes[:2]:
                    if not node["is_leaf"]:
                        splits.append((int(node["feature_idx"]), float(node["num_threshold"])))
    return splits


def hard_rows(model: FraudModel, rng: np.random.Generator) -> np.ndarray:
    x = random_features(400, rng)
    x[0] = np.nan  # nothing known at all
    x[1] = 1e300  # beyond float32: inf after IsolationForest's cast
    x[2] = -1e300
    x[3] = np.inf
    x[4] = -np.inf
    x[5] = 3.4028235e38  # float32 max, and just above it
    x[6] = np.nextafter(np.float64(3.4028235e38), np.inf)
    x[7] = 0.0
    x[8] = -0.0
    x[9] = 5e-324  # smallest subnormal: 0 in float32
    on_split = random_features(3 * len(thresholds_of(model)), rng)
    for k, (column, threshold) in enumerate(thresholds_of(model)):
        on_split[3 * k, column] = threshold
        on_split[3 * k + 1, column] = np.nextafter(threshold, np.inf)
        on_split[3 * k + 2, column] = np.nextafter(threshold, -np.inf)
    return np.concatenate([x, on_split])


def assert_matches(model: FraudModel, compiled: CompiledModel, rows: np.ndarray) -> None:
    expected = model.score(rows)
    got = compiled.score(rows)
    assert got.dtype == np.float64 and got.shape == (rows.shape[0],)
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOLERANCE)
    # Not a constant: the rows really are scored differently.
    assert np.ptp(expected) > 0.01


def isolation_model(
    x: np.ndarray, max_features: float, max_samples: int, nan_columns: int = 0
) -> FraudModel:
    probe = fraud_model([], x, nan_columns)
    forest = IsolationForest(
        n_estimators=60, max_samples=max_samples, max_features=max_features, random_state=3
    ).fit(probe.prepare(x))
    probe.components = [Component("isolation_forest", forest)]
    return probe


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("max_features", "max_samples", "nan_columns"),
    [(1.0, 64, 0), (1.0, 2048, 0), (0.5, 256, 0), (0.3, 2048, 2), (1.0, 256, 3)],
)
def test_isolation_forest_equals_sklearn(
    train: tuple[np.ndarray, np.ndarray],
    backend: Backend,
    max_features: float,
    max_samples: int,
    nan_columns: int,
) -> None:
    model = isolation_model(train[0], max_features, max_samples, nan_columns)
    compiled = compile_model(model, backend=backend)
    rows = hard_rows(model, np.random.default_rng(max_samples))
    assert_matches(model, compiled, rows)
    for k in (0, 7, 1500):  # single rows, including ones past a row block
        row = np.tile(rows[k % rows.shape[0]], (1, 1))
        np.testing.assert_allclose(compiled.score(row), model.score(row), rtol=0, atol=TOLERANCE)


def test_isolation_forest_raw_matches_score_samples_with_nan(
    train: tuple[np.ndarray, np.ndarray],
) -> None:
    """NaN straight into the trees (no imputation), for a forest fitted with NaN."""
    x = train[0]
    forest = IsolationForest(n_estimators=40, max_samples=512, random_state=5).fit(x)
    compiled = compile_model(fraud_model([Component("isolation_forest", forest)], x))
    rows = random_features(500, np.random.default_rng(2))
    for backend in BACKENDS:
        raw = component_raw(compiled.components[0], rows, backend)
        np.testing.assert_allclose(raw, -forest.score_samples(rows), rtol=0, atol=TOLERANCE)


def test_isolation_forest_single_sample_trees(train: tuple[np.ndarray, np.ndarray]) -> None:
    """max_samples=1: every tree is one leaf and sklearn defines the score as 0.5."""
    x = train[0]
    model = isolation_model(x, 1.0, 1)
    compiled = compile_model(model)
    rows = random_features(20, np.random.default_rng(4))
    np.testing.assert_allclose(compiled.score(rows), model.score(rows), rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(compiled.raws(rows)[0], 0.5)


def hgb_model(x: np.ndarray, y: np.ndarray, nan_columns: int = 0, **params: int) -> FraudModel:
    # Fitted on raw rows with NaN, so the trees learn where missing values go.
    hgb = HistGradientBoostingClassifier(
        max_iter=params.pop("max_iter", 60), early_stopping=False, random_state=1, **params
    ).fit(x, y)
    return fraud_model([Component("hist_gradient_boosting", hgb)], x, nan_columns)


@pytest.fixture(scope="module")
def hgb(train: tuple[np.ndarray, np.ndarray]) -> HistGradientBoostingClassifier:
    estimator = hgb_model(*train, max_leaf_nodes=31).components[0].estimator
    assert isinstance(estimator, HistGradientBoostingClassifier)
    return estimator


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("nan_columns", [0, 5])
def test_hist_gradient_boosting_equals_sklearn(
    train: tuple[np.ndarray, np.ndarray],
    hgb: HistGradientBoostingClassifier,
    backend: Backend,
    nan_columns: int,
) -> None:
    model = fraud_model([Component("hist_gradient_boosting", hgb)], train[0], nan_columns)
    compiled = compile_model(model, backend=backend)
    rows = hard_rows(model, np.random.default_rng(nan_columns))
    assert_matches(model, compiled, rows)
    row = rows[:1]
    np.testing.assert_allclose(compiled.score(row), model.score(row), rtol=0, atol=TOLERANCE)


def test_hist_gradient_boosting_nan_follows_the_learned_side(
    train: tuple[np.ndarray, np.ndarray], hgb: HistGradientBoostingClassifier
) -> None:
    model = fraud_model([Component("hist_gradient_boosting", hgb)], train[0])
    directions = np.concatenate([p.nodes["missing_go_to_left"][~p.nodes["is_leaf"].astype(bool)]
                                 for (p,) in hgb._predictors])  # fmt: skip
    assert directions.min() == 0 and directions.max() == 1  # both sides occur
    compiled = compile_model(model)
    rows = random_features(1000, np.random.default_rng(9))
    raw = component_raw(compiled.components[0], rows)
    np.testing.assert_allclose(raw, hgb.predict_proba(rows)[:, 1], rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize("stage", [0, 1, 2, 5])
def test_staged_walk_equals_fixed_walk(
    train: tuple[np.ndarray, np.ndarray], hgb: HistGradientBoostingClassifier, stage: int
) -> None:
    """Dropping finished rows between levels must not change any sum."""
    model = fraud_model([Component("hist_gradient_boosting", hgb)], train[0])
    compiled = compile_model(model)
    component = compiled.components[0]
    forced = dataclasses.replace(
        component, forest=dataclasses.replace(component.forest, stage=stage)
    )
    rows = random_features(2500, np.random.default_rng(stage))  # > one row block
    reference = hgb.predict_proba(rows)[:, 1]
    np.testing.assert_allclose(component_raw(forced, rows), reference, rtol=0, atol=TOLERANCE)


def test_hist_gradient_boosting_stump_only_trees(train: tuple[np.ndarray, np.ndarray]) -> None:
    """Trees that are a single leaf (no split allowed) reduce to the baseline + values."""
    x, y = train
    model = hgb_model(x, y, max_iter=5, min_samples_leaf=x.shape[0])
    compiled = compile_model(model)
    assert int(compiled.components[0].forest.depths.max()) == 0
    rows = random_features(50, np.random.default_rng(1))
    np.testing.assert_allclose(compiled.score(rows), model.score(rows), rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize("backend", BACKENDS)
def test_calibrated_ensemble_equals_sklearn(
    train: tuple[np.ndarray, np.ndarray], backend: Backend
) -> None:
    x, y = train
    model = fraud_model([], x, nan_columns=1)
    prepared = model.prepare(x)
    forest = IsolationForest(
        n_estimators=50, max_samples=256, max_features=0.7, random_state=2
    ).fit(prepared)
    hgb = HistGradientBoostingClassifier(max_iter=40, early_stopping=False, random_state=2)
    hgb.fit(prepared, y)
    grid = np.linspace(0, 1, 51)
    model.components = [
        Component("isolation_forest", forest, 1.0, np.quantile(-forest.score_samples(x), grid)),
        Component("hist_gradient_boosting", hgb, 3.0, np.quantile(hgb.predict_proba(x)[:, 1], grid)),
    ]  # fmt: skip
    compiled = compile_model(model, backend=backend)
    rows = hard_rows(model, np.random.default_rng(21))
    assert_matches(model, compiled, rows)
    for k in range(5):
        row = rows[k : k + 1]
        np.testing.assert_allclose(compiled.score(row), model.score(row), rtol=0, atol=TOLERANCE)
    big = random_features(5000, np.random.default_rng(22))
    np.testing.assert_allclose(compiled.score(big), model.score(big), rtol=0, atol=TOLERANCE)


def test_survives_skops_round_trip(train: tuple[np.ndarray, np.ndarray]) -> None:
    """The scorer compiles what MLflow loads (skops), not the object the trainer fitted."""
    import skops.io

    from fraudcore.model import skops_trusted_types

    x, y = train
    model = hgb_model(x, y, max_iter=20)
    model.components.append(isolation_model(x, 0.5, 128).components[0])
    loaded = skops.io.loads(skops.io.dumps(model), trusted=skops_trusted_types(model))
    rows = random_features(300, np.random.default_rng(8))
    np.testing.assert_allclose(
        compile_model(loaded).score(rows), model.score(rows), rtol=0, atol=TOLERANCE
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_batch_returns_empty(train: tuple[np.ndarray, np.ndarray], backend: Backend) -> None:
    compiled = compile_model(isolation_model(train[0], 1.0, 64), backend=backend)
    out = compiled.score(np.empty((0, N_FEATURES)))
    assert out.shape == (0,) and out.dtype == np.float64


def test_wrong_shape_is_a_clear_error(train: tuple[np.ndarray, np.ndarray]) -> None:
    compiled = compile_model(isolation_model(train[0], 1.0, 64))
    with pytest.raises(ValueError, match=r"expected shape \(n, 33\)"):
        compiled.score(np.zeros((3, N_FEATURES - 1)))
    with pytest.raises(ValueError, match="expected shape"):
        compiled.score(np.zeros(N_FEATURES))


def test_unsupported_components_are_refused_at_compile_time(
    train: tuple[np.ndarray, np.ndarray],
) -> None:
    x, y = train
    filled = np.nan_to_num(x)
    forest = RandomForestClassifier(n_estimators=3, random_state=0).fit(filled, y)
    good = isolation_model(x, 1.0, 64).components[0]

    def model_with(component: Component) -> FraudModel:
        return fraud_model([good, component], x)

    with pytest.raises(UnsupportedModelError, match=r"component 1 \(random_forest\).*kind"):
        compile_model(model_with(Component("random_forest", forest)))  # type: ignore[arg-type]
    with pytest.raises(UnsupportedModelError, match=r"component 1 .*not a HistGradientBoosting"):
        compile_model(model_with(Component("hist_gradient_boosting", forest)))
    with pytest.raises(UnsupportedModelError, match="not an IsolationForest"):
        compile_model(model_with(Component("isolation_forest", forest)))

    three_classes = HistGradientBoostingClassifier(max_iter=3).fit(x, np.arange(len(y)) % 3)
    with pytest.raises(UnsupportedModelError, match="binary"):
        compile_model(model_with(Component("hist_gradient_boosting", three_classes)))

    categorical = HistGradientBoostingClassifier(max_iter=3, categorical_features=[1])
    categorical.fit(filled, y)
    with pytest.raises(UnsupportedModelError, match="categorical"):
        compile_model(model_with(Component("hist_gradient_boosting", categorical)))

    narrow = IsolationForest(n_estimators=3, random_state=0).fit(filled[:, :10])
    with pytest.raises(UnsupportedModelError, match="fitted on 10 features"):
        compile_model(model_with(Component("isolation_forest", narrow)))

    with pytest.raises(UnsupportedModelError, match="no components"):
        compile_model(fraud_model([], x))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["isolation_forest", "hist_gradient_boosting"])
def test_path_attribution_adds_up_to_each_rows_leaf_sum(
    train: tuple[np.ndarray, np.ndarray], kind: str, backend: Backend
) -> None:
    x, y = train
    model = (
        isolation_model(x, max_features=0.7, max_samples=256, nan_columns=2)
        if kind == "isolation_forest"
        else hgb_model(x, y, nan_columns=2)
    )
    compiled = compile_model(model, backend=backend)
    rows = np.ascontiguousarray(model.prepare(hard_rows(model, np.random.default_rng(31))))
    component = compiled.components[0]
    shares = component_attribution(component, rows)
    assert shares.shape == (rows.shape[0], rows.shape[1] + 1)
    np.testing.assert_allclose(
        shares.sum(axis=1), leaf_sum(component, rows, backend), rtol=1e-12, atol=1e-9
    )
    # Features the trees never split on get nothing.
    used = np.unique(component.forest.nodes["feat"][~np.isnan(component.forest.nodes["thr"])])
    unused = np.setdiff1d(np.arange(rows.shape[1]), used)
    assert np.all(shares[:, unused] == 0)
