"""The application layer of notifications: one class per flow, built once in app.py, kept under an AppKey.

Only these open units of work; handlers, consumers and jobs parse, call one method and answer.
"""
from services.notifications.usecases.campaigns import CAMPAIGNS, Campaigns
from services.notifications.usecases.deliveries import DELIVERY_LOG, DeliveryLog
from services.notifications.usecases.directory import DIRECTORY, Directory
from services.notifications.usecases.fanout import FANOUT, Fanout
from services.notifications.usecases.preferences import PREFERENCES, MemberPreferences
from services.notifications.usecases.templates import TEMPLATES, Templates
from services.notifications.usecases.webhooks import WEBHOOKS, Webhooks
from services.notifications.usecases.worker import DELIVERY_WORKER, DeliveryWorker

__all__ = ["CAMPAIGNS", "DELIVERY_LOG", "DELIVERY_WORKER", "DIRECTORY", "FANOUT", "PREFERENCES", "TEMPLATES",
           "WEBHOOKS", "Campaigns", "DeliveryLog", "DeliveryWorker", "Directory", "Fanout", "MemberPreferences",
           "Templates", "Webhooks"]
