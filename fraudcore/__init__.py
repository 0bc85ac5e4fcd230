"""Shared core of the fraud stack: message contracts, feature definitions, settings,
Kafka/Redis client setup, logging and metric helpers. Every service imports it; no
service imports another service."""
