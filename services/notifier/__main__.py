from shared.service import run_service

from .service import serve

run_service("notifier", serve)
