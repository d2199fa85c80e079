"""The audit: proves exactly-once on a running fleet by reconciling what the edge sent with
what the lake holds (DESIGN section 5, "Checkable").

It reads only the lake's Delta tables (column-pruned, one event-date partition at a time) and
the producers' checkpoint topic, so it runs beside a live pipeline, in CI and on a copy of the
lake; given an edge database it also checks every source row.
"""
