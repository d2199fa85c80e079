"""Real Kafka, schema registry and S3 servers as local processes, for machines without Docker."""
