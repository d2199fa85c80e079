"""Typed settings with one precedence everywhere: CLI flags > environment > YAML file > defaults.

Every component's settings class derives from `LayeredSettings` and is built with
`load_settings`, so the precedence and the error format (file, line, key) are decided here once.
`ConnectionSettings` holds what DESIGN section 3 lists: how to reach Kafka, the schema registry
and the lake. Secrets are `SecretStr`, so they never reach a log line or an error message.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from pydantic import BaseModel, SecretStr, ValidationError, field_validator
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
        raise ConfigError(_describe(exc, settings_cls, document, origin, cli, section)) from None
    finally:
        _yaml_values.reset(token)


def check_config_keys(
    document: YamlDocument,
    *,
    top_level: Iterable[type[BaseModel]],
    sections: Mapping[str, type[BaseModel]],
) -> None:
    """Refuse a key the file's reader would ignore, at any depth: top level, section, or a
    mapping inside a section (a sink's `routes:` entries).

    Settings classes ignore keys they do not know (so one file can serve every command), and
    a misspelt key silently became its default: `kafka_bootstrap_serverz:` sent a node to the
    default broker. The whole file is checked against every command's settings, whichever
    command reads it. Keys compare case-insensitively, as the settings do.
    """
    shapes: dict[str, Any] = {}
    for model in top_level:
        shapes.update({name: _model_in(f.annotation) for name, f in model.model_fields.items()})
    shapes.update(sections)
    _check_mapping(document, document.data, (), set(shapes), shapes)


def _check_mapping(
    document: YamlDocument,
    data: dict[str, Any],
    loc: tuple[str | int, ...],
    known: set[str],
    nested: Mapping[str, Any],
) -> None:
    """`nested` maps a known key to the model its value must follow (or None: a leaf)."""
    for key, value in data.items():
        name = key.lower()
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
            hint = f"did you mean '{close[0]}'?" if close else f"known: {', '.join(sorted(known))}"
            raise ConfigError(f"{document.where((*loc, key))}: unknown setting; {hint}")
        _check_value(document, value, (*loc, key), nested.get(name))


def _check_value(
    document: YamlDocument, value: Any, loc: tuple[str | int, ...], shape: Any
) -> None:
    """Descend into `value` where `shape` (a model, or a dict of models) says what it holds."""
    if shape is None or not isinstance(value, dict):
        return  # a leaf, or a wrong type the settings class reports with its line
    if isinstance(shape, type) and issubclass(shape, BaseModel):
        fields = shape.model_fields
        nested = {name: _model_in(f.annotation) for name, f in fields.items()}
        _check_mapping(document, value, loc, set(fields), nested)
    elif typing.get_origin(shape) is dict:
        model = _model_in(typing.get_args(shape)[1])
        for key, item in value.items():
            _check_value(document, item, (*loc, key), model)


def _model_in(annotation: Any) -> Any:
    """The model (or dict of models) a field holds, through `X | None`; None for a leaf."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin is dict:
        return annotation if _model_in(typing.get_args(annotation)[1]) else None
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None


def _describe(
    exc: ValidationError,
    settings_cls: type[BaseSettings],
    document: YamlDocument | None,
    origin: dict[str, tuple[str | int, ...]],
    cli: dict[str, Any],
    section: str | None = None,
) -> str:
    import os

    problems = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        key = str(loc[0]) if loc else ""
        message = error["msg"]
        if not loc:  # a rule over several settings: name all of them, wherever they came from
            where = f"settings {_env_name(settings_cls, '')}*"
            if document is not None:
                place = f", section '{section}'" if section else ""
                where = f"{document.path}{place} ({_env_name(settings_cls, '')}*)"
        elif key in cli:
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
