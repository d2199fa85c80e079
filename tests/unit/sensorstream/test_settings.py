"""One precedence everywhere: CLI flag > environment > YAML file > default."""

from __future__ import annotations

import pytest
from pydantic_settings import SettingsConfigDict

from sensorstream.errors import ConfigError
from sensorstream.settings import ConnectionSettings, LayeredSettings, load_settings


class ExampleSettings(LayeredSettings):
    model_config = SettingsConfigDict(env_prefix="EXAMPLE_")  # merged with the parent's

    rate: float = 1.0
    name: str = "default-name"
    sensors: int = 5


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for key in ("EXAMPLE_RATE", "EXAMPLE_NAME", "EXAMPLE_SENSORS", "KAFKA_BOOTSTRAP_SERVERS"):
        monkeypatch.delenv(key, raising=False)


def write(tmp_path, text: str):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_defaults_when_nothing_is_set():
    settings = load_settings(ExampleSettings)
    assert (settings.rate, settings.name, settings.sensors) == (1.0, "default-name", 5)


def test_each_layer_overrides_the_one_below(tmp_path, monkeypatch):
    config = write(tmp_path, "example:\n  rate: 2.0\n  name: from-yaml\n  sensors: 7\n")
    monkeypatch.setenv("EXAMPLE_RATE", "3.0")
    monkeypatch.setenv("EXAMPLE_NAME", "from-env")
    settings = load_settings(
        ExampleSettings, config_file=config, section="example", overrides={"rate": 4.0}
    )
    assert settings.rate == 4.0  # flag beats env and YAML
    assert settings.name == "from-env"  # env beats YAML
    assert settings.sensors == 7  # YAML beats default


def test_unset_flags_do_not_override(tmp_path, monkeypatch):
    monkeypatch.setenv("EXAMPLE_RATE", "3.0")
    settings = load_settings(ExampleSettings, overrides={"rate": None, "sensors": 9})
    assert (settings.rate, settings.sensors) == (3.0, 9)


def test_connection_keys_are_read_from_top_level_yaml(tmp_path):
    config = write(
        tmp_path, "KAFKA_BOOTSTRAP_SERVERS: broker:9093\nsensorstream_lake_uri: s3://b/p\n"
    )
    settings = load_settings(ConnectionSettings, config_file=config)
    assert settings.kafka_bootstrap_servers == "broker:9093"
    assert settings.lake_uri == "s3://b/p"


def test_bad_value_names_file_line_and_key(tmp_path):
    config = write(tmp_path, "# sensors\nexample:\n  name: ok\n  rate: fast\n")
    with pytest.raises(ConfigError) as error:
        load_settings(ExampleSettings, config_file=config, section="example")
    message = str(error.value)
    assert f"{config}, line 4, key 'example.rate'" in message
    assert "valid number" in message


def test_bad_value_from_environment_names_the_variable(monkeypatch):
    monkeypatch.setenv("EXAMPLE_SENSORS", "many")
    with pytest.raises(ConfigError, match="environment variable EXAMPLE_SENSORS"):
        load_settings(ExampleSettings)


def test_a_rule_across_settings_names_where_they_come_from(tmp_path):
    """A check over several settings (a model validator) has no one key: the message says which
    settings it is about (their variables and the file's section), never `setting ''`."""
    from sinks.maintain_settings import MaintainSettings

    config = write(tmp_path, "maintain:\n  open_tier_bytes: [4096, 2048]\n")
    with pytest.raises(ConfigError) as error:
        load_settings(MaintainSettings, config_file=config, section="maintain")
    message = str(error.value)
    assert "setting ''" not in message
    assert f"{config}, section 'maintain' (SENSORSTREAM_MAINTAIN_*)" in message
    assert "file sizes must grow tier by tier" in message


def test_unknown_key_in_section_is_an_error(tmp_path):
    config = write(tmp_path, "example:\n  rate: 1\n  sensorz: 3\n")
    with pytest.raises(ConfigError, match=r"line 3, key 'example.sensorz': unknown setting"):
        load_settings(ExampleSettings, config_file=config, section="example")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("example: [1, 2\n", r"line 2: invalid YAML"),
        ("- just\n- a list\n", "top level must be a mapping"),
        ("example: !!python/object:os.system {}\n", "invalid YAML"),
        (
            "example:\n  rate: 1\n  rate: 2\n",
            r"line 3: key 'rate' appears twice \(first on line 2\)",
        ),
    ],
)
def test_malformed_yaml_is_a_config_error(tmp_path, text, expected):
    with pytest.raises(ConfigError, match=expected):
        load_settings(ExampleSettings, config_file=write(tmp_path, text), section="example")


def test_missing_config_file_names_it(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(ExampleSettings, config_file=tmp_path / "absent.yaml")


def test_secrets_never_show_in_repr_or_errors(monkeypatch):
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "hunter2-secret")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-very-secret")
    settings = load_settings(ConnectionSettings)
    assert "hunter2-secret" not in repr(settings)
    assert "aws-very-secret" not in str(settings)
    assert settings.kafka_client_config()["sasl.password"] == "hunter2-secret"
    assert settings.storage_options()["AWS_SECRET_ACCESS_KEY"] == "aws-very-secret"


def test_storage_options_allow_http_only_for_http_endpoints():
    plain = ConnectionSettings(aws_endpoint_url="http://127.0.0.1:9000")
    tls = ConnectionSettings(aws_endpoint_url="https://s3.example.com")
    assert plain.storage_options()["AWS_ALLOW_HTTP"] == "true"
    assert "AWS_ALLOW_HTTP" not in tls.storage_options()
    assert ConnectionSettings(aws_endpoint_url=None).storage_options() == {}


def test_registry_credentials_are_a_secret_passed_as_basic_auth(monkeypatch):
    monkeypatch.setenv("SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO", "svc:registry-secret")
    settings = load_settings(ConnectionSettings)
    assert "registry-secret" not in repr(settings)
    assert settings.schema_registry_config() == {
        "url": "http://127.0.0.1:8081/apis/ccompat/v7",
        "basic.auth.user.info": "svc:registry-secret",
    }


def test_the_registry_client_sends_the_credentials(monkeypatch):
    """The client really built from the settings authenticates: confluent-kafka's Python
    client refuses librdkafka's `basic.auth.credentials.source`, so a config carrying it failed
    every producer, router and sink given registry credentials."""
    import base64
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from schemas.registry import SchemaRegistry

    seen: list[str | None] = []

    class Registry(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization"))
            self.send_response(200)
            self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
            self.end_headers()
            self.wfile.write(b"[]")

        def log_message(self, *args) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Registry)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("SCHEMA_REGISTRY_URL", f"http://127.0.0.1:{server.server_port}")
        monkeypatch.setenv("SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO", "svc:registry-secret")
        registry = SchemaRegistry(load_settings(ConnectionSettings).schema_registry_config())
        assert registry.client.get_subjects() == []
    finally:
        server.shutdown()
        server.server_close()
    expected = "Basic " + base64.b64encode(b"svc:registry-secret").decode()
    assert seen == [expected]


def test_an_empty_registry_credential_means_no_authentication(monkeypatch):
    """A node without registry authentication still defines the variable its job maps (a
    Bacalhau `env:` reference to an undefined variable fails the execution): empty is none."""
    monkeypatch.setenv("SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO", "")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "")
    settings = load_settings(ConnectionSettings)
    assert "basic.auth.user.info" not in settings.schema_registry_config()
    assert "sasl.password" not in settings.kafka_client_config()


def test_a_password_in_the_registry_url_is_refused_without_echoing_it(monkeypatch):
    monkeypatch.setenv("SCHEMA_REGISTRY_URL", "https://svc:url-secret@registry.example.com")
    with pytest.raises(ConfigError, match="SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO") as error:
        load_settings(ConnectionSettings)
    assert "url-secret" not in str(error.value)
