"""Sinks: routed topics into time-partitioned Delta tables and an optional landing area."""
