"""How sensorstream runs: the local real stack, container, Databricks and Bacalhau assets."""
