"""The routing-rule engine: the routing file, its `where` language, and routing one record.

`config` loads and compiles a routing file (or control-topic content) once; `engine` applies
the compiled routes to each decoded record. Nothing here touches Kafka or Avro bytes.
"""
