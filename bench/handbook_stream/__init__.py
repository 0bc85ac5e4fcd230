"""The handbook benchmark through Kafka: `python -m bench.handbook_stream`."""
