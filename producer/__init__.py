"""The producer service: simulated card traffic with injected, labelled fraud, or a replay
of a transactions file, published to Kafka (`python -m producer --help`)."""
