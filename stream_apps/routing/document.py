"""The routing file's shape: the keys a routing file may have, and their types.

Pydantic models only, with no compiling: `config` compiles a file of this shape into the
routes of `compiled`, which keeps the validated file beside them. Both import this
module, neither imports the other (imports point one way).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
)

from sensorstream.topics import DEAD_LETTERS, READINGS

ROUTE_NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_-]{0,63}$"
"""Route names become lake paths (`<lake>/<route>`) and Avro record-name suffixes."""
ALERT_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$"

_FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Validation(_Strict):
    """Rules of a strict route: a record breaking any of them goes to the DLQ, not the route."""

    required: list[StrictStr] = []
    ranges: dict[str, tuple[_FiniteFloat, _FiniteFloat]] = {}
    types: dict[str, Literal["number", "integer", "string", "boolean"]] = {}
    allowed: dict[str, list[StrictBool | StrictInt | StrictFloat | StrictStr]] = {}


class Transform(_Strict):
    round: dict[str, Annotated[int, Field(ge=0, le=15)]] = {}
    drop: list[StrictStr] = []
    hash: list[StrictStr] = []
    salt_env: StrictStr | None = None


class Alert(_Strict):
    name: Annotated[str, Field(pattern=ALERT_NAME_PATTERN)]
    when: StrictStr
    severity: Literal["info", "warning", "critical"]


class Route(_Strict):
    name: Annotated[str, Field(pattern=ROUTE_NAME_PATTERN)]
    topic: StrictStr
    where: StrictStr | None = None
    # `validate` is a BaseModel method; the field keeps the file's key through the alias.
    validation: Validation | None = Field(default=None, alias="validate")
    transform: Transform | None = None
    alerts: list[Alert] | None = None
    passthrough: StrictBool | None = None


class RoutingConfig(_Strict):
    version: Literal[1]
    input: StrictStr = READINGS
    dead_letter_topic: StrictStr = DEAD_LETTERS
    routes: list[Route] = Field(min_length=1)
