from pydantic_settings import SettingsConfigDict

from libs.settings import ServiceSettings


class CatalogSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="CATALOG_", extra="ignore", populate_by_name=True)

    service_name: str = "catalog"
    port: int = 8081
    # A channel price may differ from the base price by at most this much (one price everywhere, within a band).
    channel_price_band_pct: float = 5.0
    # How often due scheduled price changes are applied (quotes already honour them the moment they are due).
    price_scheduler_interval_s: float = 5.0
