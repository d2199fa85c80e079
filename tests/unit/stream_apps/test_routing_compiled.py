"""Routing decoded readings with the default routes (and a few custom ones)."""

from __future__ import annotations

import copy
import hashlib
import io
import textwrap
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import fastavro
import pytest

from stream_apps.routing.compiled import RoutingResult
from stream_apps.routing.config import CompiledRouting, load_routing, parse_routing
from tests.routing_files import DEFAULT_ROUTES, FIELDS, input_schema

INPUT_SCHEMA = input_schema()
PARSED_INPUT = fastavro.parse_schema(copy.deepcopy(INPUT_SCHEMA))

TYPICAL: dict[str, Any] = {
    "id": 42,
    "timestamp": datetime(2024, 5, 1, 12, 34, 56, 789012, tzinfo=UTC),
    "sensor_id": "SENSOR_0001",
    "temperature": 21.5,
    "humidity": 45.25,
    "pressure": 1.0132,  # bar
    "vibration": 0.12,
    "voltage": 230.1,
    "status_code": 0,
    "anomaly_flag": 0,
    "anomaly_type": None,
    "firmware_version": "1.4.2",
    "model": "TempVibe-3000",
    "manufacturer": "SensorTech",
    "location": "Fabrik Süd, Halle 3",
    "latitude": 52.520008,
    "longitude": 13.404954,
    "original_timezone": "Europe/Berlin",
    "serial_number": "SN-000123",
    "manufacture_date": "2023-01-15",
    "deployment_type": "indoor",
    "installation_date": "2023-03-01",
    "height_meters": 2.5,
    "orientation_degrees": 90.0,
    "instance_id": "inst-7f3a",
    "sensor_type": "temperature",
    "_node_id": "node-berlin-1",
    "_region": "eu-central",
    "_source_table": "sensor_readings",
    "_source_rowid": 42,
}


def reading(**changes: Any) -> dict[str, Any]:
    """A record as the router gets it: written and read back with fastavro."""
    record = {**TYPICAL, **changes}
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, PARSED_INPUT, record)
    buffer.seek(0)
    return fastavro.schemaless_reader(buffer, PARSED_INPUT, None)


@pytest.fixture(scope="module")
def routing() -> CompiledRouting:
    return load_routing(DEFAULT_ROUTES, FIELDS)


def routes_of(result: RoutingResult) -> dict[str, Any]:
    return {output.route: output for output in result.outputs}


def custom(text: str) -> CompiledRouting:
    return parse_routing(textwrap.dedent(text), "test.yaml", FIELDS)


# ---- which routes ---------------------------------------------------------------------------


def test_a_typical_reading(routing: CompiledRouting) -> None:
    record = reading()
    original = copy.deepcopy(record)
    result = routing.route(record)
    outputs = routes_of(result)
    assert list(outputs) == ["raw", "schematized", "filtered", "regional"]
    assert result.dead_letters == []
    assert outputs["raw"].topic == "sensors.raw"
    assert outputs["raw"].passthrough and outputs["raw"].record is None
    assert outputs["regional"].topic == "sensors.regional.eu-central"
    assert outputs["regional"].passthrough and outputs["regional"].record is None
    assert outputs["schematized"].topic == "sensors.schematized"
    assert not outputs["schematized"].passthrough
    assert record == original  # the input is never changed
    assert outputs["schematized"].record is not record


def test_an_anomaly_matches_several_routes(routing: CompiledRouting) -> None:
    record = reading(anomaly_flag=1, status_code=1, anomaly_type="spike", temperature=95.5)
    outputs = routes_of(routing.route(record))
    assert list(outputs) == ["raw", "schematized", "emergency", "regional"]
    emergency = outputs["emergency"].record
    assert emergency["severity"] == "critical"
    assert emergency["matched_rules"] == ["anomaly", "overheat"]
    assert emergency["temperature"] == 95.5


def test_a_reading_matching_only_raw_and_regional(routing: CompiledRouting) -> None:
    # status 2 is not "normal" (filtered), not an anomaly (emergency), and no humidity makes
    # schematized fail? No: null values are not range-checked; a missing sensor_id does.
    record = reading(status_code=2)
    record["sensor_id"] = None
    result = routing.route(record)
    assert list(routes_of(result)) == ["raw", "regional"]
    assert [(f.route, f.reason) for f in result.dead_letters] == [
        ("schematized", "schematized: required.sensor_id: null")
    ]


def test_null_flags_match_no_filter(routing: CompiledRouting) -> None:
    outputs = routes_of(routing.route(reading(anomaly_flag=None, status_code=None)))
    assert "filtered" not in outputs and "emergency" not in outputs


# ---- schematized --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"temperature": 180.5}, "schematized: ranges.temperature: 180.5 is outside [-40, 125]"),
        ({"humidity": -0.5}, "schematized: ranges.humidity: -0.5 is outside [0, 100]"),
        ({"voltage": 480.01}, "schematized: ranges.voltage: 480.01 is outside [0, 480]"),
        # hPa sent where the default routes expect bar
        ({"pressure": 1013.2}, "schematized: ranges.pressure: 1013.2 is outside [0, 700]"),
        ({"vibration": float("nan")}, "schematized: finite.vibration: nan is not a finite number"),
        ({"temperature": float("inf")}, "schematized: finite.temperature: inf is not a finite"),
        ({"sensor_id": "   "}, "schematized: required.sensor_id: blank"),
        (
            {"temperature": -41.0, "humidity": 101.0},
            "schematized: ranges.temperature: -41.0 is outside [-40, 125]; "
            "ranges.humidity: 101.0 is outside [0, 100]",
        ),
    ],
)
def test_schematized_failures_name_the_rule(
    routing: CompiledRouting, changes: dict[str, Any], reason: str
) -> None:
    result = routing.route(reading(**changes))
    assert [f.route for f in result.dead_letters] == ["schematized"]
    assert result.dead_letters[0].reason.startswith(reason)
    assert "schematized" not in routes_of(result)
    assert {"raw", "regional"} <= set(routes_of(result))  # other routes unaffected


def test_schematized_bounds_are_inclusive(routing: CompiledRouting) -> None:
    result = routing.route(reading(temperature=125.0, humidity=0.0, voltage=480.0))
    assert result.dead_letters == []


def test_schematized_normalises(routing: CompiledRouting) -> None:
    record = reading(sensor_id="  SENSOR_0001\t", model=" TempVibe ")
    record["timestamp"] = datetime(2024, 5, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    out = routes_of(routing.route(record))["schematized"].record
    assert out["sensor_id"] == "SENSOR_0001"
    assert out["model"] == "TempVibe"
    assert out["timestamp"] == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert out["timestamp"].tzinfo is UTC
    assert record["sensor_id"] == "  SENSOR_0001\t"  # the input is untouched


def test_validation_types_and_allowed() -> None:
    routing = custom(
        """
        version: 1
        routes:
          - name: strict
            topic: sensors.strict
            validate:
              types: {status_code: integer, model: string, temperature: number}
              allowed: {status_code: [0, 1], model: [A, B]}
        """
    )
    assert routing.route({"status_code": 1, "model": "A", "temperature": 1}).dead_letters == []
    failures = routing.route({"status_code": 7, "model": 3, "temperature": "x"}).dead_letters
    assert failures[0].reason == (
        "strict: types.model: 3 is not a string; types.temperature: 'x' is not a number; "
        "allowed.status_code: 7 is not one of [0, 1]; allowed.model: 3 is not one of ['A', 'B']"
    )
    # True == 1 in Python, but not as an allowed value.
    assert routing.route({"status_code": True}).dead_letters


# ---- filtered ------------------------------------------------------------------------------


def test_filtered_transforms(routing: CompiledRouting) -> None:
    out = routes_of(routing.route(reading()))["filtered"].record
    assert "serial_number" not in out
    assert out["instance_id"] == hashlib.sha256(b"inst-7f3a").hexdigest()
    assert out["latitude"] == 52.52 and out["longitude"] == 13.4
    assert out["sensor_id"] == "SENSOR_0001"


def test_filtered_nulls_and_half_even_rounding(routing: CompiledRouting) -> None:
    out = routes_of(routing.route(reading(instance_id=None, latitude=2.675, longitude=None)))
    record = out["filtered"].record
    assert record["instance_id"] is None
    assert record["latitude"] == 2.67  # Python round(): 2.675 is 2.67499999... in binary
    assert record["longitude"] is None


def test_rounding_a_non_number_is_a_route_failure() -> None:
    routing = custom(
        """
        version: 1
        routes:
          - name: f
            topic: sensors.f
            transform: {round: {model: 1}}
        """
    )
    result = routing.route({"model": "X"})
    assert result.outputs == []
    assert result.dead_letters[0].reason == "f: transform.round.model: 'X' is not a number"


# ---- emergency -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "severity", "rules"),
    [
        ({"anomaly_flag": 1}, "warning", ["anomaly"]),
        ({"temperature": 90.5}, "critical", ["overheat"]),
        ({"vibration": 51.0, "anomaly_flag": 1}, "critical", ["anomaly", "vibration"]),
        ({"vibration": 50.0}, None, None),  # > 50, not >= 50
    ],
)
def test_emergency_severity_and_matched_rules(
    routing: CompiledRouting, changes: dict[str, Any], severity: str | None, rules: Any
) -> None:
    output = routes_of(routing.route(reading(**changes))).get("emergency")
    if severity is None:
        assert output is None
        return
    assert output.topic == "sensors.emergency"
    assert output.record["severity"] == severity
    assert output.record["matched_rules"] == rules


def test_where_alone_gives_warning_and_where_rule() -> None:
    routing = custom(
        """
        version: 1
        routes:
          - name: e
            topic: sensors.e
            where: "humidity > 90"
            alerts:
              - {name: hot, when: "temperature > 90", severity: critical}
              - {name: info, when: "temperature > 50", severity: info}
        """
    )
    assert routing.route({"humidity": 95.0, "temperature": 20.0}).outputs[0].record[
        "matched_rules"
    ] == ["where"]
    only_where = routing.route({"humidity": 95.0, "temperature": 20.0}).outputs[0].record
    assert only_where["severity"] == "warning"
    info = routing.route({"humidity": 10.0, "temperature": 60.0}).outputs[0].record
    assert (info["severity"], info["matched_rules"]) == ("info", ["info"])
    assert routing.route({"humidity": 10.0, "temperature": 20.0}).outputs == []


# ---- regional ------------------------------------------------------------------------------


@pytest.mark.parametrize("region", ["eu-central", "us_east_1", "ap.south", "A1"])
def test_regional_topic_per_region(routing: CompiledRouting, region: str) -> None:
    output = routes_of(routing.route(reading(_region=region)))["regional"]
    assert output.topic == f"sensors.regional.{region}"
    assert output.passthrough


@pytest.mark.parametrize(
    ("region", "shown"),
    [
        ("eu/west", "'eu/west'"),
        ("..", "'..'"),
        ("eu..west", "'eu..west'"),
        (".eu", "'.eu'"),
        ("eu west", "'eu west'"),
        ("eu\nwest", "'eu\\nwest'"),
        ("", "''"),
        ("süd", "'s\\xfcd'"),
        ("x" * 300, "'xxxxx"),
    ],
)
def test_unsafe_region_goes_to_the_dlq(routing: CompiledRouting, region: str, shown: str) -> None:
    result = routing.route(reading(_region=region))
    assert "regional" not in routes_of(result)
    assert [f.route for f in result.dead_letters] == ["regional"]
    reason = result.dead_letters[0].reason
    assert reason.startswith(f"regional: topic template: _region value {shown}")
    assert reason.isascii()
    assert "raw" in routes_of(result)


def test_unsafe_region_message(routing: CompiledRouting) -> None:
    result = routing.route(reading(_region="eu/west"))
    assert result.dead_letters[0].reason == (
        "regional: topic template: _region value 'eu/west' is not a safe topic name"
    )
    null_region = {**reading(), "_region": None}
    assert routing.route(null_region).dead_letters[0].reason == (
        "regional: topic template: _region value null is not a safe topic name"
    )


def test_template_with_several_fields_and_an_integer() -> None:
    routing = custom(
        """
        version: 1
        routes:
          - name: t
            topic: "s.{_region}.{status_code}"
        """
    )
    assert routing.route({"_region": "eu", "status_code": 3}).outputs[0].topic == "s.eu.3"
    assert routing.route({"_region": "eu", "status_code": True}).dead_letters


# ---- failures stay with their route ----------------------------------------------------------


def test_evaluation_error_fails_only_that_route() -> None:
    routing = custom(
        """
        version: 1
        routes:
          - name: all
            topic: sensors.all
          - name: odd
            topic: sensors.odd
            where: "sensor_id > 5"
          - name: alerting
            topic: sensors.alerting
            alerts: [{name: bad, when: "model / 0 > 1", severity: info}]
        """
    )
    result = routing.route({"sensor_id": "S1", "model": 3})
    assert [o.route for o in result.outputs] == ["all"]
    reasons = {f.route: f.reason for f in result.dead_letters}
    assert reasons["odd"].startswith("odd: where: cannot compare string 'S1' with number 5")
    assert "sensor_id='S1'" in reasons["odd"]
    assert reasons["alerting"].startswith("alerting: alerts.bad: division by zero")


def test_passthrough_false_reencodes_a_copy() -> None:
    routing = custom(
        """
        version: 1
        routes:
          - name: copy
            topic: sensors.copy
            passthrough: false
        """
    )
    record = reading()
    output = routing.route(record).outputs[0]
    assert not output.passthrough
    assert output.record == record and output.record is not record


# ---- output schemas -------------------------------------------------------------------------


def test_output_schemas_of_passthrough_routes_are_none(routing: CompiledRouting) -> None:
    assert routing.output_schema("raw", INPUT_SCHEMA) is None
    assert routing.output_schema("regional", INPUT_SCHEMA) is None
    with pytest.raises(KeyError):
        routing.output_schema("nope", INPUT_SCHEMA)


def test_output_schemas_are_derived_from_the_input(routing: CompiledRouting) -> None:
    before = copy.deepcopy(INPUT_SCHEMA)
    schematized = routing.output_schema("schematized", INPUT_SCHEMA)
    filtered = routing.output_schema("filtered", INPUT_SCHEMA)
    emergency = routing.output_schema("emergency", INPUT_SCHEMA)
    assert before == INPUT_SCHEMA
    names = [(s["namespace"], s["name"]) for s in (schematized, filtered, emergency)]
    assert names == [
        ("sensorstream", "SensorReadingSchematized"),
        ("sensorstream", "SensorReadingFiltered"),
        ("sensorstream", "SensorReadingEmergency"),
    ]
    filtered_fields = {f["name"]: f for f in filtered["fields"]}
    assert "serial_number" not in filtered_fields
    assert filtered_fields["instance_id"]["type"] == ["null", "string"]
    assert filtered_fields["latitude"]["type"] == ["null", "double"]
    emergency_fields = {f["name"]: f["type"] for f in emergency["fields"]}
    assert emergency_fields["severity"] == "string"
    assert emergency_fields["matched_rules"] == {"type": "array", "items": "string"}


def test_required_fields_become_non_null() -> None:
    schema = copy.deepcopy(INPUT_SCHEMA)
    schema["fields"].append({"name": "site", "type": ["null", "string"], "default": None})
    routing = parse_routing(
        "version: 1\nroutes:\n  - {name: s, topic: t, validate: {required: [site, sensor_id]}}\n",
        "test.yaml",
        FIELDS | {"site"},
    )
    out = {f["name"]: f for f in routing.output_schema("s", schema)["fields"]}
    assert out["site"]["type"] == "string" and "default" not in out["site"]
    assert out["sensor_id"]["type"] == "string"


def test_hashing_a_non_null_long_gives_a_string() -> None:
    routing = parse_routing(
        "version: 1\nroutes:\n  - {name: h, topic: t, transform: {hash: [id]}}\n",
        "test.yaml",
        FIELDS,
    )
    schema = routing.output_schema("h", INPUT_SCHEMA)
    assert next(f for f in schema["fields"] if f["name"] == "id")["type"] == "string"
    record = routing.route(reading()).outputs[0].record
    assert record["id"] == hashlib.sha256(b"42").hexdigest()
    fastavro.validate(record, fastavro.parse_schema(schema), raise_errors=True)


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"anomaly_flag": 1, "status_code": 1, "temperature": 99.0, "anomaly_type": "spike"},
        {"vibration": 60.0, "instance_id": None, "latitude": None},
        {"sensor_id": " S ", "humidity": None, "serial_number": None},
    ],
)
def test_output_records_validate_and_encode(
    routing: CompiledRouting, changes: dict[str, Any]
) -> None:
    for output in routing.route(reading(**changes)).outputs:
        schema = routing.output_schema(output.route, INPUT_SCHEMA)
        if output.passthrough:
            assert schema is None
            continue
        parsed = fastavro.parse_schema(copy.deepcopy(schema))
        fastavro.validate(output.record, parsed, raise_errors=True)
        buffer = io.BytesIO()
        fastavro.schemaless_writer(buffer, parsed, output.record)
        buffer.seek(0)
        assert fastavro.schemaless_reader(buffer, parsed, None) == output.record


def test_a_new_column_flows_through() -> None:
    """Schema evolution: a column added at the edge appears in every re-encoded route."""
    schema = copy.deepcopy(INPUT_SCHEMA)
    schema["fields"].append({"name": "battery", "type": ["null", "double"], "default": None})
    parsed = fastavro.parse_schema(copy.deepcopy(schema))
    routing = load_routing(DEFAULT_ROUTES, FIELDS | {"battery"})
    record = {**reading(), "battery": 3.7}
    for output in routing.route(record).outputs:
        if output.passthrough:
            continue
        out_schema = routing.output_schema(output.route, schema)
        assert output.record["battery"] == 3.7
        fastavro.validate(output.record, fastavro.parse_schema(out_schema), raise_errors=True)
    fastavro.validate(record, parsed, raise_errors=True)


# ---- unchanged outputs (the router forwards the input's body for them) ----------------------


def test_a_clean_reading_is_unchanged_on_validating_routes_only(routing: CompiledRouting) -> None:
    outputs = routes_of(routing.route(reading()))
    assert outputs["schematized"].unchanged  # nothing to normalise
    assert not outputs["filtered"].unchanged  # dropped, hashed and rounded fields
    assert not outputs["raw"].unchanged  # passthrough: forwarded anyway, never re-encoded


@pytest.mark.parametrize(
    "changes",
    [
        {"location": " hall 3 "},  # trimmed
        {"timestamp": datetime(2024, 5, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))},
        {"timestamp": datetime(2024, 5, 1, 12, 0)},  # naive: made UTC
    ],
)
def test_a_normalised_reading_is_not_unchanged(
    routing: CompiledRouting, changes: dict[str, Any]
) -> None:
    record = {**reading(), **changes}
    output = routes_of(routing.route(record))["schematized"]
    assert not output.unchanged
    assert output.record["location"].strip() == output.record["location"]
    assert output.record["timestamp"].tzinfo is UTC


def test_alert_routes_are_never_unchanged() -> None:
    routing = custom(
        """\
        version: 1
        routes:
          - name: alerts
            topic: t.alerts
            validate: {required: [sensor_id]}
            alerts: [{name: hot, when: "temperature > 0", severity: info}]
        """
    )
    (output,) = routing.route(reading()).outputs
    assert not output.unchanged and output.record["severity"] == "info"
