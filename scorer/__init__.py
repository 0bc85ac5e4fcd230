"""The scorer: consumes transactions, computes point-in-time features in Redis, scores
with the MLflow champion model and writes scores and explained alerts exactly once."""
