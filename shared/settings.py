"""Configuration from environment variables; every default works on one machine with no setup."""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import urlsplit

DEV_SECRET = "dev-only-secret-change-me"


@dataclass(frozen=True)
class Settings:
    nats_url: str = "nats://127.0.0.1:4222"
    database_url: str = "postgresql://postgres@127.0.0.1:5432/team_members"
    smtp_url: str = "smtp://127.0.0.1:2525"
    public_url: str = "http://localhost:8080"
    server_secret: str = DEV_SECRET
    stream_replicas: int = 1
    worker_threads: int = 8
    relay_batch_size: int = 256
    renewal_grace_seconds: float = 300.0
    renewal_interval_seconds: float = 30.0
    log_level: str = "info"

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        defaults = cls()
        return cls(
            nats_url=env.get("NATS_URL", defaults.nats_url),
            database_url=env.get("DATABASE_URL", defaults.database_url),
            smtp_url=env.get("SMTP_URL", defaults.smtp_url),
            public_url=env.get("PUBLIC_URL", defaults.public_url).rstrip("/"),
            server_secret=env.get("SERVER_SECRET", defaults.server_secret),
            stream_replicas=int(env.get("STREAM_REPLICAS", defaults.stream_replicas)),
            worker_threads=int(env.get("WORKER_THREADS", defaults.worker_threads)),
            relay_batch_size=int(env.get("RELAY_BATCH_SIZE", defaults.relay_batch_size)),
            renewal_grace_seconds=float(env.get("RENEWAL_GRACE_SECONDS", defaults.renewal_grace_seconds)),
            renewal_interval_seconds=float(env.get("RENEWAL_INTERVAL_SECONDS", defaults.renewal_interval_seconds)),
            log_level=env.get("LOG_LEVEL", defaults.log_level),
        )


def postgres_env(database_url: str, pool_size: int) -> dict[str, str]:
    """The eventsourcing library's PostgreSQL settings for a `postgresql://` URL."""
    url = urlsplit(database_url)
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": url.path.lstrip("/") or "postgres",
        "POSTGRES_HOST": url.hostname or "127.0.0.1",
        "POSTGRES_PORT": str(url.port or 5432),
        "POSTGRES_USER": url.username or "postgres",
        "POSTGRES_PASSWORD": url.password or "",
        "POSTGRES_POOL_SIZE": str(pool_size),
        "POSTGRES_MAX_OVERFLOW": "4",
        "POSTGRES_CONNECT_TIMEOUT": "5",
        "POSTGRES_LOCK_TIMEOUT": "5",
        "POSTGRES_PRE_PING": "n",
        "POSTGRES_ENABLE_DB_FUNCTIONS": "n",
        "CREATE_TABLE": "y",
    }
