"""The expectations on silver readings: data, read by the job and the Lakeflow pipeline alike.

Ranges are the physical plausibility of stream_apps/routes.yaml (`schematized` route): silver
is built from the `raw` route, which carries every record unchanged, so the same judgement is
made here. A missing value is not a range failure (`x IS NULL OR ...`): sensors report only
what they measure. `fail` is kept for what the pipeline itself guarantees; a failure there is a
broken pipeline, not a broken sensor, and must stop the update.
"""

from __future__ import annotations

from sensorstream_lakehouse.expectations import Action, Expectation


def _range(column: str, low: float, high: float, why: str) -> Expectation:
    return Expectation(
        f"{column}_in_range",
        f"{column} IS NULL OR {column} BETWEEN {low} AND {high}",
        Action.DROP,
        why,
    )


SILVER_READINGS: tuple[Expectation, ...] = (
    Expectation(
        "has_identity",
        "sensor_id IS NOT NULL AND _node_id IS NOT NULL AND _source_rowid IS NOT NULL",
        Action.FAIL,
        "the Avro schema makes these required; a null means the sink or the schema broke",
    ),
    Expectation(
        "has_lineage",
        "_kafka_topic IS NOT NULL AND _kafka_partition IS NOT NULL AND _kafka_offset >= 0",
        Action.FAIL,
        "the sink writes them for every row",
    ),
    Expectation(
        "event_date_matches_timestamp",
        "event_date = to_date(timestamp)",
        Action.FAIL,
        "the sink partitions by the UTC date of the event time",
    ),
    _range("temperature", -40, 125, "degrees Celsius, industrial sensor range"),
    _range("humidity", 0, 100, "percent relative humidity"),
    _range("voltage", 0, 480, "12 V supplies up to 480 V three-phase"),
    _range("pressure", 0, 700, "bar, the unit of the legacy fleet's sensors"),
    _range("vibration", 0, 200, "mm/s RMS, or g for the legacy fleet's sensors"),
    Expectation(
        "known_status_code",
        "status_code IS NULL OR status_code IN (0, 1)",
        Action.WARN,
        "0 normal, 1 anomaly; anything else is a sensor state nobody has described yet",
    ),
    Expectation(
        "anomaly_has_type",
        "NOT coalesce(is_anomaly, false) OR anomaly_type IS NOT NULL",
        Action.WARN,
        "the simulator and the fleet set anomaly_type with anomaly_flag",
    ),
)
