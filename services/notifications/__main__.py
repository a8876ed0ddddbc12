from libs.service import run_service
from services.notifications.app import create_app
from services.notifications.settings import NotificationsSettings

if __name__ == "__main__":
    settings = NotificationsSettings.load()
    run_service(lambda: create_app(settings), settings)
