"""The committed Grafana dashboards: generated, consistent, and wired to the provisioned
Prometheus datasource."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.observability.sources import (
    DASHBOARD_FILES,
    PROMETHEUS_DIR,
    dashboard_builder,
    dashboards,
    provisioned_datasource_uids,
)

BOARDS = dashboards()


def test_committed_json_is_the_generator_output() -> None:
    builder = dashboard_builder()
    expected = {d.filename: json.loads(builder.render(d)) for d in builder.DASHBOARDS}
    assert set(expected) == set(BOARDS), "dashboard files and generator disagree on the set"
    for name, board in BOARDS.items():
        assert board == expected[name], (
            f"{name} differs from grafana/build_dashboards.py: run it and commit the result"
        )


def test_three_dashboards_with_unique_uids() -> None:
    uids = [board["uid"] for board in BOARDS.values()]
    assert len(DASHBOARD_FILES) == 3
    assert len(set(uids)) == len(uids)
    titles = [board["title"] for board in BOARDS.values()]
    assert len(set(titles)) == len(titles)


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_panels_have_unique_ids_and_queries(name: str) -> None:
    board = BOARDS[name]
    assert 36 <= board["schemaVersion"] <= 41
    ids = [panel["id"] for panel in board["panels"]]
    assert len(set(ids)) == len(ids), f"duplicate panel ids in {name}"
    for panel in board["panels"]:
        exprs = [t.get("expr", "").strip() for t in panel.get("targets", [])]
        assert any(exprs), f"{name}: panel {panel['title']!r} has no query"
        assert all(exprs), f"{name}: panel {panel['title']!r} has an empty query"
        refs = [t["refId"] for t in panel["targets"]]
        assert len(set(refs)) == len(refs), f"{name}: {panel['title']!r} repeats a refId"
        assert panel.get("description"), f"{name}: {panel['title']!r} has no description"


def _datasources(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if isinstance(node.get("datasource"), dict):
            yield node["datasource"]
        for value in node.values():
            yield from _datasources(value)
    elif isinstance(node, list):
        for value in node:
            yield from _datasources(value)


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_every_datasource_is_the_provisioned_prometheus(name: str) -> None:
    (uid,) = provisioned_datasource_uids()
    board = BOARDS[name]
    found = [ds for ds in _datasources(board) if ds.get("type") != "grafana"]
    assert found
    for ds in found:
        assert ds == {"type": "prometheus", "uid": uid}, f"{name}: datasource {ds}"
    # Each panel and each of its targets names it (no reliance on a default datasource).
    for panel in board["panels"]:
        assert panel["datasource"]["uid"] == uid
        assert all(t["datasource"]["uid"] == uid for t in panel["targets"])


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_panels_fit_the_grid_without_overlapping(name: str) -> None:
    taken: set[tuple[int, int]] = set()
    for panel in BOARDS[name]["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        cells = {
            (x, y)
            for x in range(pos["x"], pos["x"] + pos["w"])
            for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not cells & taken, f"{name}: {panel['title']!r} overlaps another panel"
        taken |= cells


def test_links_point_at_the_other_dashboards() -> None:
    uids = {board["uid"] for board in BOARDS.values()}
    for board in BOARDS.values():
        linked = {link["url"].removeprefix("/d/") for link in board["links"]}
        assert linked == uids - {board["uid"]}


def test_dashboards_doc_explains_every_panel() -> None:
    doc = (PROMETHEUS_DIR / "DASHBOARDS.md").read_text()
    for board in BOARDS.values():
        assert board["uid"] in doc
        for panel in board["panels"]:
            assert f"| {panel['title']} |" in doc, f"DASHBOARDS.md misses {panel['title']!r}"
