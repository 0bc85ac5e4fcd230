"""The trainer: rebuilds features offline (exactly as the scorer computes them online),
trains a FraudModel, evaluates it on a time-based holdout, logs and registers it in MLflow
and moves the `champion` alias only when the new version wins on the same holdout."""
