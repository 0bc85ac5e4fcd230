"""Where the shared data sets live (read-only, outside the repository)."""

from __future__ import annotations

import os
from pathlib import Path

from fraudcore.settings import REPO_ROOT

HANDBOOK_RELATIVE = Path("shared/datasets/fraud-handbook/transactions.csv.gz")


def handbook_path() -> Path:
    """The Fraud Detection Handbook transactions file: FRAUD_HANDBOOK_PATH if set, else
    shared/datasets/fraud-handbook/transactions.csv.gz beside the repository (looked for in
    each folder above it). FileNotFoundError naming every place tried otherwise."""
    explicit = os.environ.get("FRAUD_HANDBOOK_PATH")
    tried = [Path(explicit)] if explicit else [p / HANDBOOK_RELATIVE for p in REPO_ROOT.parents]
    for candidate in tried:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        "Fraud Detection Handbook data not found; tried: "
        + ", ".join(str(p) for p in tried)
        + " (set FRAUD_HANDBOOK_PATH to the transactions.csv.gz file)"
    )
