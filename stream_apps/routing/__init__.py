"""The routing-rule engine: the routing file, its `where` language, and routing one record.

`config` loads and compiles a routing file (or control-topic content) once; `compiled` holds
the compiled routes and applies them to each decoded record. Nothing here touches Kafka or
Avro bytes: that is `stream_apps.dispatch`, one message in, its outgoing messages out.
"""
