from pydantic import Field
from pydantic_settings import SettingsConfigDict

from libs.settings import ServiceSettings


class StockSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="STOCK_", extra="ignore", populate_by_name=True)

    service_name: str = "stock"
    port: int = 8082
    reservation_ttl_s: int = Field(900, description="how long a reservation holds stock unless the caller asks "
                                                    "otherwise (an unpaid order then lets go)")
    reservation_max_ttl_s: int = Field(30 * 24 * 3600, description="a paid pickup order may wait days for "
                                                                   "collection")
    paid_reservation_ttl_s: int = Field(10 * 86400, description="a paid order's reservation is held this long "
                                                                 "(on orders.order.confirmed) until its goods leave")
    sweeper_interval_s: float = 5.0
    sweeper_batch: int = 200
    max_splits: int = Field(3, description="a ship order is split over at most this many locations")
    default_reorder_point: int = Field(2, description="reorder point of a level that has none of its own "
                                                      "(stock.level_low fires when available drops below)")
    capacity_day_utc_offset_h: int = Field(8, description="daily ship capacity counts per local calendar day of "
                                                          "the stores (China Standard Time by default)")
    availability_limit: int = 10
    sold_out_memo_ttl_s: float = Field(1.0, description="how long this process trusts 'exhausted everywhere' for "
                                                        "a SKU before reading levels again (flash sales)")
    reconcile_interval_s: float = Field(60.0, description="how often the reconciliation job proves each level's "
                                                          "reserved count against its open reservations")
    reconcile_grace_s: float = Field(30.0, description="a level held by the fast path this recently is left to "
                                                       "the next run (its reservation may still be on its way)")
    fast_path_attempts: int = Field(3, description="guarded single-document attempts of a reservation before it "
                                                   "takes the transactional path")
    max_movement_units: int = Field(10_000, description="one movement changes a level by at most this many units, "
                                                        "whoever records it")
    clerk_approval_threshold: int = Field(20, description="a store clerk's adjustment, count (its variance), receipt "
                                                          "or return of more units than this waits for a manager "
                                                          "of the store to approve it")
