from libs.service import run_service
from services.catalog.app import create_app
from services.catalog.settings import CatalogSettings

if __name__ == "__main__":
    settings = CatalogSettings.load()
    run_service(lambda: create_app(settings), settings)
