from libs.service import run_service
from services.settlement.app import create_app
from services.settlement.settings import SettlementSettings

if __name__ == "__main__":
    settings = SettlementSettings.load()
    run_service(lambda: create_app(settings), settings)
