"""sensorstream: sensor readings from edge SQLite databases to Delta tables, exactly once.

This package is the front door only: the `sensorstream` command and the connection settings
every component shares. The pipeline lives in producers/, stream_apps/ and sinks/.
"""

__version__ = "0.1.0"
