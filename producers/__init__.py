"""Producers: the edge tailer that streams SQLite rows to Kafka, and the sensor simulator."""
