from libs.service import run_service
from services.orders.app import create_app
from services.orders.settings import OrdersSettings

if __name__ == "__main__":
    settings = OrdersSettings.load()
    run_service(lambda: create_app(settings), settings)
