"""Typed settings with one precedence everywhere: CLI flags > environment > YAML file > defaults.

Every component's settings class derives from `LayeredSettings` and is built with
`load_settings`, so the precedence and the error format (file, line, key) are decided here once.
`ConnectionSettings` holds what DESIGN section 3 lists: how to reach Kafka, the schema registry
and the lake. Secrets are `SecretStr`, so they never reach a log line or an error message.
"""

from __future__ import annotations

from contextvars import ContextVar
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from pydantic import SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from sensorstream.config_file import YamlDocument, read_yaml
from sensorstream.errors import ConfigError

_yaml_values: ContextVar[dict[str, Any] | None] = ContextVar("_yaml_values", default=None)


class LayeredSettings(BaseSettings):
    """Base for settings built by `load_settings`; keys are case-insensitive env names."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        yaml_source = InitSettingsSource(settings_cls, init_kwargs=_yaml_values.get() or {})
        return (init_settings, env_settings, yaml_source)


S = TypeVar("S", bound=LayeredSettings)


def _env_name(settings_cls: type[BaseSettings], key: str) -> str:
    prefix = settings_cls.model_config.get("env_prefix", "") or ""
    return f"{prefix}{key}".upper()


def load_settings(
    settings_cls: type[S],
    *,
    config_file: Path | None = None,
    section: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> S:
    """Build `settings_cls` from CLI `overrides`, the environment, then `config_file`.

    `section` picks a mapping inside the YAML file (e.g. `producer:`); top-level keys that
    are field names apply too, so one file can carry connection settings and component
    settings side by side. Flags left unset (None) do not override anything.
    """
    document: YamlDocument | None = read_yaml(config_file) if config_file else None
    values: dict[str, Any] = {}
    origin: dict[str, tuple[str | int, ...]] = {}
    if document is not None:
        fields = set(settings_cls.model_fields)
        for key, value in document.data.items():
            if key.lower() in fields:
                values[key.lower()] = value
                origin[key.lower()] = (key,)
        if section is not None and section in document.data:
            block = document.data[section]
            if not isinstance(block, dict):
                raise ConfigError(f"{document.where((section,))}: must be a mapping")
            unknown = sorted(k for k in block if k.lower() not in fields)
            if unknown:
                raise ConfigError(
                    f"{document.where((section, unknown[0]))}: unknown setting; "
                    f"known: {', '.join(sorted(fields))}"
                )
            for key, value in block.items():
                values[key.lower()] = value
                origin[key.lower()] = (section, key)
    cli = {k: v for k, v in (overrides or {}).items() if v is not None}
    token = _yaml_values.set(values)
    try:
        return settings_cls(**cli)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, settings_cls, document, origin, cli)) from None
    finally:
        _yaml_values.reset(token)


def _describe(
    exc: ValidationError,
    settings_cls: type[BaseSettings],
    document: YamlDocument | None,
    origin: dict[str, tuple[str | int, ...]],
    cli: dict[str, Any],
) -> str:
    import os

    problems = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        key = str(loc[0]) if loc else ""
        message = error["msg"]
        if key in cli:
            where = f"command-line option --{key.replace('_', '-')}"
        elif _env_name(settings_cls, key) in {k.upper() for k in os.environ}:
            where = f"environment variable {_env_name(settings_cls, key)}"
        elif document is not None and key in origin:
            where = document.where((*origin[key], *loc[1:]))
        else:
            where = f"setting '{key}'"
        problems.append(f"{where}: {message}")
    return "invalid configuration:\n  " + "\n  ".join(problems)


class ConnectionSettings(LayeredSettings):
    """How to reach Kafka, the schema registry and the lake (DESIGN section 3)."""

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_security_protocol: str | None = None
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_ca_location: str | None = None
    schema_registry_url: str = "http://127.0.0.1:8081/apis/ccompat/v7"
    # "user:password" (Confluent's basic.auth.user.info). A secret of its own rather than
    # userinfo in the URL, which is a plain setting and would be printed.
    schema_registry_basic_auth_user_info: SecretStr | None = None
    sensorstream_lake_uri: str = "./lake"
    aws_endpoint_url: str | None = None
    aws_region: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: SecretStr | None = None
    aws_session_token: SecretStr | None = None

    @property
    def lake_uri(self) -> str:
        return self.sensorstream_lake_uri

    def kafka_client_config(self) -> dict[str, str]:
        """librdkafka settings shared by every producer, consumer and admin client."""
        config = {"bootstrap.servers": self.kafka_bootstrap_servers}
        if self.kafka_security_protocol:
            config["security.protocol"] = self.kafka_security_protocol
        if self.kafka_sasl_mechanism:
            config["sasl.mechanism"] = self.kafka_sasl_mechanism
        if self.kafka_sasl_username:
            config["sasl.username"] = self.kafka_sasl_username
        if self.kafka_sasl_password:
            config["sasl.password"] = self.kafka_sasl_password.get_secret_value()
        if self.kafka_ssl_ca_location:
            config["ssl.ca.location"] = self.kafka_ssl_ca_location
        return config

    @field_validator("schema_registry_url")
    @classmethod
    def _no_credentials_in_url(cls, url: str) -> str:
        if urlsplit(url).password is not None:
            raise ValueError(
                "the URL carries a password, which would be logged with it: put 'user:password' "
                "in SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO instead"
            )
        return url

    def schema_registry_config(self) -> dict[str, str]:
        """confluent-kafka's SchemaRegistryClient config. Its Python client takes
        `basic.auth.user.info` alone and refuses librdkafka's `basic.auth.credentials.source`
        (every client would fail at start). An empty value means no authentication."""
        config = {"url": self.schema_registry_url}
        if self.schema_registry_basic_auth_user_info:
            config["basic.auth.user.info"] = (
                self.schema_registry_basic_auth_user_info.get_secret_value()
            )
        return config

    def storage_options(self) -> dict[str, str]:
        """object_store options for deltalake; empty for a local lake path.

        A session token, when present, is passed and preferred by the AWS credential chain
        over long-lived keys alone.
        """
        options: dict[str, str] = {}
        if self.aws_endpoint_url:
            options["AWS_ENDPOINT_URL"] = self.aws_endpoint_url
            if self.aws_endpoint_url.startswith("http://"):
                options["AWS_ALLOW_HTTP"] = "true"
        if self.aws_region:
            options["AWS_REGION"] = self.aws_region
        if self.aws_access_key_id:
            options["AWS_ACCESS_KEY_ID"] = self.aws_access_key_id
        if self.aws_secret_access_key:
            options["AWS_SECRET_ACCESS_KEY"] = self.aws_secret_access_key.get_secret_value()
        if self.aws_session_token:
            options["AWS_SESSION_TOKEN"] = self.aws_session_token.get_secret_value()
        return options
