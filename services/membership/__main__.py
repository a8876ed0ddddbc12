from libs.service import run_service
from services.membership.app import create_app
from services.membership.settings import MembershipSettings

if __name__ == "__main__":
    settings = MembershipSettings.load()
    run_service(lambda: create_app(settings), settings)
