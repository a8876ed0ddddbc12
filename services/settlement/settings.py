from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from libs.settings import ServiceSettings
from services.settlement.domain.periods import as_zone


class SettlementSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="SETTLEMENT_", extra="ignore", populate_by_name=True)

    service_name: str = "settlement"
    port: int = 8086
    business_time_zone: str = Field("Asia/Shanghai", description=(
        "IANA time zone of the business calendar: statement days, weeks and months, every `date` parameter of "
        "the settlement API, and `date=today`"))
    # The provider file upload can be large.
    max_upload_bytes: int = 8 * 1024 ** 2
    # Scheduled closing of yesterday / last week / last month, this long after they ended.
    auto_close_enabled: bool = True
    auto_close_grace_hours: float = Field(6.0, ge=0, le=24 * 7)
    auto_close_interval_s: float = Field(600.0, gt=0)

    @field_validator("business_time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        as_zone(value)  # refuses a name the time zone database does not know, at start-up
        return value
