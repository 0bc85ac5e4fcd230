"""The model manager against a real MLflow: a model whose features are not the scorer's
is refused at load, and the champion in use is kept."""

from __future__ import annotations

import dataclasses
import uuid

import pytest
from mlflow.tracking import MlflowClient
from prometheus_client import REGISTRY

from fraudcore.features import FEATURE_NAMES
from fraudcore.model import FeatureContractError, FraudModel
from scorer.model_manager import ModelManager
from tests.scorer.models import isolation_model, register
from tests.stack import TestStack


def _failures() -> float:
    return REGISTRY.get_sample_value("scorer_model_load_failures_total") or 0.0


def _renamed(model: FraudModel, names: tuple[str, ...]) -> FraudModel:
    return dataclasses.replace(model, feature_names=names)


REORDERED = (FEATURE_NAMES[1], FEATURE_NAMES[0], *FEATURE_NAMES[2:])
MISSING_ONE = FEATURE_NAMES[:-1]
ONE_MORE = (*FEATURE_NAMES, "user_txn_count_90d")


@pytest.mark.parametrize(
    ("names", "words"),
    [
        (REORDERED, "another order, first at position 0"),
        (MISSING_ONE, f"not trained on: ['{FEATURE_NAMES[-1]}']"),
        (ONE_MORE, "not computed: ['user_txn_count_90d']"),
    ],
)
def test_a_model_of_other_features_is_refused_and_the_champion_kept(
    stack: TestStack, names: tuple[str, ...], words: str
) -> None:
    name = f"contract-{uuid.uuid4().hex[:8]}"
    model = isolation_model(seed=2, trees=10)
    first = register(stack.mlflow_uri, name, model)
    manager = ModelManager(stack.mlflow_uri, name, "champion", poll_s=3600)
    assert manager.refresh() and manager.current is not None
    assert manager.current.version == first

    other = register(stack.mlflow_uri, name, _renamed(model, names))
    failures = _failures()
    assert not manager.refresh()
    assert manager.current.version == first  # still scoring with the champion it had
    assert manager.last_error is not None and f"version {other} refused" in manager.last_error
    assert words in manager.last_error
    assert not manager.refresh()  # the alias stays there: counted again, still refused
    assert _failures() == failures + 2

    # The alias moving on to a model of these features is followed as usual.
    fixed = register(stack.mlflow_uri, name, model)
    assert manager.refresh() and manager.current.version == fixed
    assert (
        MlflowClient(stack.mlflow_uri).get_model_version_by_alias(name, "champion").version == fixed
    )


def test_the_contract_names_the_difference() -> None:
    model = isolation_model(seed=3, trees=5)
    model.check_features(FEATURE_NAMES)
    with pytest.raises(FeatureContractError, match="trained on 33 features, 32 are computed"):
        _renamed(model, FEATURE_NAMES).check_features(MISSING_ONE)
