from libs.service import run_service
from services.stock.app import create_app
from services.stock.settings import StockSettings

if __name__ == "__main__":
    settings = StockSettings.load()
    run_service(lambda: create_app(settings), settings)
