from libs.service import run_service
from services.gateway.app import create_app
from services.gateway.settings import GatewaySettings

if __name__ == "__main__":
    settings = GatewaySettings.load()
    run_service(lambda: create_app(settings), settings)
