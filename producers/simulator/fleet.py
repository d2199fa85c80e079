"""The sensors of one simulated edge node: who they are and where they stand.

Each sensor's identity is derived from (seed, region, index) alone, so a node restarted with
the same seed keeps its sensors, and raising `--sensors` adds sensors without renaming the
existing ones. Ids carry the region and a model code but only letters, digits, '-' and '_',
because they become Kafka keys and parts of topic names and lake paths downstream.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass
from datetime import date, timedelta

SAFE_ID = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass(frozen=True)
class RegionSite:
    city: str
    latitude: float
    longitude: float
    timezone: str


_REGION_SITES: dict[str, RegionSite] = {
    "us-east-1": RegionSite("Ashburn", 39.04, -77.49, "America/New_York"),
    "us-east-2": RegionSite("Columbus", 39.96, -83.00, "America/New_York"),
    "us-west-2": RegionSite("Boardman", 45.84, -119.70, "America/Los_Angeles"),
    "eu-west-1": RegionSite("Dublin", 53.35, -6.26, "Europe/Dublin"),
    "eu-central-1": RegionSite("Frankfurt", 50.11, 8.68, "Europe/Berlin"),
    "eu-north-1": RegionSite("Stockholm", 59.33, 18.07, "Europe/Stockholm"),
    "ap-southeast-1": RegionSite("Singapore", 1.35, 103.82, "Asia/Singapore"),
    "ap-northeast-1": RegionSite("Tokyo", 35.68, 139.69, "Asia/Tokyo"),
    "sa-east-1": RegionSite("Sao Paulo", -23.55, -46.63, "America/Sao_Paulo"),
}


def region_site(region: str) -> RegionSite:
    """The centre sensors of `region` stand around; unknown regions get a stable made-up one."""
    known = _REGION_SITES.get(region.lower())
    if known is not None:
        return known
    digest = hashlib.sha256(region.encode()).digest()
    latitude = -55 + 120 * digest[0] / 255
    longitude = -180 + 360 * int.from_bytes(digest[1:3], "big") / 65535
    return RegionSite(f"Site {region}", round(latitude, 2), round(longitude, 2), "UTC")


@dataclass(frozen=True)
class SensorModel:
    manufacturer: str
    name: str
    code: str  # the short, id-safe form used inside sensor ids
    sensor_type: str
    nominal_voltage: float  # 230 V mains or a 12 V battery/solar supply
    base_vibration: float  # mm/s at rest: vibration sensors sit on running machines


_MODELS: tuple[SensorModel, ...] = (
    SensorModel("Northwind Instruments", "EnvMonitor-3000", "env3000", "environmental", 12.0, 0.3),
    SensorModel("Helix Sensing", "VibraTrack-V2", "vt2", "vibration", 230.0, 2.5),
    SensorModel("Aster Labs", "ClimaSense-X1", "csx1", "weather", 12.0, 0.2),
    SensorModel("Kestrel Power", "GridWatch-230", "gw230", "power", 230.0, 0.8),
    SensorModel("Northwind Instruments", "TempProbe-T7", "tp7", "temperature", 12.0, 0.1),
)

_DEPLOYMENTS = ("indoor", "outdoor", "industrial")
_SITE_KINDS = {"indoor": "Office", "outdoor": "Field Station", "industrial": "Plant"}


@dataclass(frozen=True)
class Sensor:
    """One sensor's fixed metadata, plus the baselines its readings vary around."""

    sensor_id: str
    model: SensorModel
    firmware_version: str
    serial_number: str
    manufacture_date: str
    installation_date: str
    deployment_type: str
    location: str
    latitude: float
    longitude: float
    original_timezone: str
    height_meters: float
    orientation_degrees: float
    instance_id: str
    base_temperature: float
    daily_swing: float  # peak-to-mean °C of the day/night cycle
    base_humidity: float
    base_pressure: float  # hPa, the model's unit; readings carry bar

    def metadata_row(self) -> tuple[object, ...]:
        """The metadata columns, in `database.METADATA_COLUMNS` order."""
        return (
            self.firmware_version,
            self.model.name,
            self.model.manufacturer,
            self.location,
            self.latitude,
            self.longitude,
            self.original_timezone,
            self.serial_number,
            self.manufacture_date,
            self.deployment_type,
            self.installation_date,
            self.height_meters,
            self.orientation_degrees,
            self.instance_id,
            self.model.sensor_type,
        )


def build_fleet(seed: int, region: str, count: int) -> list[Sensor]:
    """The `count` sensors of the node identified by (`seed`, `region`)."""
    node = random.Random(f"sensorstream-simulator:{seed}:{region}:node")
    instance_id = f"i-{node.getrandbits(68):017x}"
    first_number = node.randrange(10_000)
    site = region_site(region)
    return [
        _build_sensor(seed, region, site, index, (first_number + index) % 10_000, instance_id)
        for index in range(count)
    ]


def _build_sensor(
    seed: int, region: str, site: RegionSite, index: int, number: int, instance_id: str
) -> Sensor:
    rng = random.Random(f"sensorstream-simulator:{seed}:{region}:sensor:{index}")
    model = rng.choice(_MODELS)
    deployment = rng.choice(_DEPLOYMENTS)
    sensor_id = f"{region}-{model.code}-{number:04d}"
    if not SAFE_ID.match(sensor_id):  # the region is validated by the settings already
        raise ValueError(f"unsafe sensor id {sensor_id!r}")
    manufactured = date(2019, 1, 1) + timedelta(days=rng.randrange(5 * 365))
    installed = manufactured + timedelta(days=rng.randrange(30, 400))
    latitude = round(site.latitude + rng.uniform(-0.25, 0.25), 6)
    longitude = round(site.longitude + rng.uniform(-0.25, 0.25), 6)
    height = {"indoor": (0.5, 4.0), "outdoor": (2.0, 30.0), "industrial": (0.5, 12.0)}[deployment]
    if deployment == "outdoor":
        # Warmer towards the equator: Singapore sits near 28 °C, Dublin near 14 °C.
        base_temperature = max(5.0, 28.0 - 0.25 * abs(latitude)) + rng.gauss(0, 1.0)
        daily_swing, base_humidity = rng.uniform(4.0, 7.0), rng.uniform(55.0, 75.0)
    elif deployment == "industrial":
        base_temperature = rng.gauss(26.0, 2.0)
        daily_swing, base_humidity = rng.uniform(1.5, 3.0), rng.uniform(35.0, 55.0)
    else:
        base_temperature = rng.gauss(21.5, 1.0)
        daily_swing, base_humidity = rng.uniform(0.5, 1.5), rng.uniform(35.0, 50.0)
    height_meters = round(rng.uniform(*height), 1)
    return Sensor(
        sensor_id=sensor_id,
        model=model,
        firmware_version=f"{rng.randint(1, 3)}.{rng.randint(0, 9)}.{rng.randint(0, 20)}",
        serial_number=f"{model.code.upper()}-{rng.getrandbits(32):08X}",
        manufacture_date=manufactured.isoformat(),
        installation_date=installed.isoformat(),
        deployment_type=deployment,
        location=f"{site.city} {_SITE_KINDS[deployment]} {rng.randint(1, 9)}",
        latitude=latitude,
        longitude=longitude,
        original_timezone=site.timezone,
        height_meters=height_meters,
        orientation_degrees=round(rng.uniform(0.0, 360.0), 1),
        instance_id=instance_id,
        base_temperature=base_temperature,
        daily_swing=daily_swing,
        base_humidity=base_humidity,
        # About 0.12 hPa less per metre of height above the ground station.
        base_pressure=1013.25 + rng.gauss(0, 3.0) - 0.12 * height_meters,
    )
