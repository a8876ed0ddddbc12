from pydantic import Field
from pydantic_settings import SettingsConfigDict

from libs.settings import ServiceSettings


class SettlementSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="SETTLEMENT_", extra="ignore", populate_by_name=True)

    service_name: str = "settlement"
    port: int = 8086
    # Statement periods follow the business's local calendar (Shanghai: UTC+8, no daylight saving).
    period_utc_offset_minutes: int = Field(480, ge=-720, le=840)
    # The provider file upload can be large.
    max_upload_bytes: int = 8 * 1024 ** 2
    # Scheduled closing of yesterday / last week / last month, this long after they ended.
    auto_close_enabled: bool = True
    auto_close_grace_hours: float = Field(6.0, ge=0, le=24 * 7)
    auto_close_interval_s: float = Field(600.0, gt=0)
