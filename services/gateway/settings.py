from pydantic_settings import SettingsConfigDict

from libs.settings import ServiceSettings, service_url_field


class GatewaySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore", populate_by_name=True)

    service_name: str = "gateway"
    port: int = 8080
    catalog_url: str = service_url_field("catalog", 8081)
    stock_url: str = service_url_field("stock", 8082)
    orders_url: str = service_url_field("orders", 8083)
    membership_url: str = service_url_field("membership", 8084)
    notifications_url: str = service_url_field("notifications", 8085)
    settlement_url: str = service_url_field("settlement", 8086)
    upstream_timeout_s: float = 10.0
    upstream_connect_timeout_s: float = 2.0
    max_body_bytes: int = 1024 * 1024
    pool_size: int = 200

    def upstreams(self) -> dict[str, str]:
        return {"catalog": self.catalog_url, "stock": self.stock_url, "orders": self.orders_url,
                "membership": self.membership_url, "notifications": self.notifications_url,
                "settlement": self.settlement_url}
