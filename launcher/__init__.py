"""Local launcher for the stack's infrastructure (Kafka, Redis, MLflow, Prometheus) and,
in the `stack` profile, the application services.

Everything runs as plain processes: Kafka from Apache jars fetched through Maven, Redis
and Prometheus from Debian packages, MLflow from the virtualenv. Each service keeps a pid
file and a log in its run folder (.run/<profile>/), so `up` is idempotent and `down`
stops exactly what the launcher started. Entry point: `python -m launcher --help`.
"""
