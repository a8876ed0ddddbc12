from pydantic import Field
from pydantic_settings import SettingsConfigDict

from libs.settings import ServiceSettings


class CatalogSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="CATALOG_", extra="ignore", populate_by_name=True)

    service_name: str = "catalog"
    port: int = 8081
    channel_price_band_pct: float = Field(5.0, description=(
        "How far, in %, a channel price may differ from the base price (one price everywhere, within a band)"))
    price_scheduler_interval_s: float = Field(5.0, description=(
        "How often due scheduled price changes are applied (quotes already honour them the moment they are due)"))
