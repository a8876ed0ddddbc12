from pydantic_settings import SettingsConfigDict

from libs.settings import ServiceSettings


class CatalogSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="CATALOG_", extra="ignore", populate_by_name=True)

    service_name: str = "catalog"
    port: int = 8081
    channel_price_band_pct: float = 5.0
