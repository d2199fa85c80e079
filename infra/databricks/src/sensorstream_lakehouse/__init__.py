"""The Databricks side of sensorstream: bronze, silver and gold tables from the sink's lake.

A package of its own (a wheel built by the bundle, infra/databricks/pyproject.toml) rather than
part of the `sensorstream` distribution: a cluster needs pyspark code only, not the Kafka,
Avro and delta-rs stack of the edge and streaming side. Nothing here imports sensorstream; the
contract between the two is the lake layout of DESIGN section 8.
"""
