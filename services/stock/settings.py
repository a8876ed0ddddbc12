from pydantic_settings import SettingsConfigDict

from libs.settings import ServiceSettings


class StockSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="STOCK_", extra="ignore", populate_by_name=True)

    service_name: str = "stock"
    port: int = 8082
    # How long a reservation holds stock unless the caller asks otherwise (an unpaid order then lets go).
    reservation_ttl_s: int = 900
    reservation_max_ttl_s: int = 30 * 24 * 3600  # a paid pickup order may wait days for collection
    sweeper_interval_s: float = 5.0
    sweeper_batch: int = 200
    # A ship order is split over at most this many locations.
    max_splits: int = 3
    # Reorder point of a level that has none of its own (stock.level_low fires when available drops below).
    default_reorder_point: int = 2
    # Daily ship capacity counts per local calendar day of the stores (China Standard Time by default).
    capacity_day_utc_offset_h: int = 8
    availability_limit: int = 10
    # How long this process trusts "exhausted everywhere" for a SKU before reading levels again (flash sales).
    sold_out_memo_ttl_s: float = 1.0
