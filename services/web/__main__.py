from shared.lifecycle import run_service

from .bootstrap import serve

run_service("web", serve)
