"""What operators see: Prometheus metrics, and the HTTP exporter each service serves them on.

The metric families are defined here, once; the code that measures calls the small functions
below (one line at each place). Each service serves `/metrics` on its own port (METRICS_PORT,
METRICS_HOST), from prometheus_client's server thread: a scrape never runs on the event loop.
What can only be read by asking (a consumer's pending count, the store's newest notification, the
deliveries per status) is sampled every METRICS_SAMPLE_SECONDS by a task of the service.
The list, with types, labels and meaning: deploy/README.md, "Metrics".
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Protocol
from wsgiref.simple_server import WSGIServer

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from .contract.replies import Reply
from .periodic import every
from .settings import ConfigurationError

if TYPE_CHECKING:
    from .consumer import ProjectionConsumer

PREFIX = "team_members"
# `make run` gives each service its own port; 0 turns the exporter off.
DEFAULT_PORTS = {"membership": 9101, "billing": 9102, "audit": 9103, "notifier": 9104, "web": 9105}
DEFAULT_HOST = "127.0.0.1"
DEFAULT_SAMPLE_SECONDS = 5.0

# Commands take milliseconds to a few hundred; authorize, sub-millisecond to tens of milliseconds.
COMMAND_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
AUTHORIZE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

COMMANDS = Counter(
    f"{PREFIX}_commands", "Commands answered, by command and outcome (ok or the error code)", ["command", "outcome"]
)
COMMAND_SECONDS = Histogram(
    f"{PREFIX}_command_duration_seconds",
    "Time from decoding a command to its reply, by command and outcome",
    ["command", "outcome"],
    buckets=COMMAND_BUCKETS,
)
AUTHORIZE = Counter(f"{PREFIX}_authorize", "authorize requests answered, by decision (allowed, denied, error)", ["decision"])
AUTHORIZE_SECONDS = Histogram(
    f"{PREFIX}_authorize_duration_seconds",
    "Time from decoding an authorize request to its reply, by decision",
    ["decision"],
    buckets=AUTHORIZE_BUCKETS,
)
CONSUMER_POSITION = Gauge(
    f"{PREFIX}_consumer_position",
    "Stream sequence the consumer is acked through (every message at or below it handled)",
    ["consumer"],
)
CONSUMER_LAG_SECONDS = Histogram(
    f"{PREFIX}_consumer_event_lag_seconds",
    "Time from an event's occurred_at to the ack that covers its applied message",
    ["consumer"],
    buckets=LAG_BUCKETS,
)
CONSUMER_BEHIND = Gauge(
    f"{PREFIX}_consumer_behind_messages", "Messages on the stream not yet delivered to the consumer (sampled)", ["consumer"]
)
CONSUMER_ACK_PENDING = Gauge(
    f"{PREFIX}_consumer_ack_pending", "Messages delivered and not yet acknowledged (sampled)", ["consumer"]
)
CONSUMER_STREAM_LAST = Gauge(
    f"{PREFIX}_consumer_stream_last_sequence", "Last sequence of the stream the consumer reads (sampled)", ["consumer"]
)
DEAD_LETTERS = Counter(f"{PREFIX}_dead_letters", "Messages a consumer parked on the dead-letter stream", ["consumer"])
RELAY_ACTIVE = Gauge(f"{PREFIX}_relay_active", "1 on the instance whose relay holds the lock, 0 on a standby (sampled)")
RELAY_PUBLISHED = Gauge(f"{PREFIX}_relay_published_notification_id", "Notification id the relay has published up to (sampled)")
RELAY_STORE = Gauge(f"{PREFIX}_relay_store_notification_id", "Newest notification id in the event store (sampled)")
RELAY_LAG = Gauge(f"{PREFIX}_relay_lag_notifications", "Notifications in the store not yet published; 0 on a standby (sampled)")
DELIVERIES = Gauge(f"{PREFIX}_notifier_deliveries", "Invitation email deliveries in each status (sampled)", ["status"])
SEND_ATTEMPTS = Counter(
    f"{PREFIX}_notifier_send_attempts", "Delivery attempts settled, by result (sent, retry, failed, skipped)", ["result"]
)
HTTP_REQUESTS = Counter(
    f"{PREFIX}_http_requests",
    "HTTP requests the edge answered, by route template (unmatched for no route), method and status",
    ["route", "method", "status"],
)
HTTP_SECONDS = Histogram(
    f"{PREFIX}_http_request_duration_seconds",
    "Time from a request's arrival at the edge to the end of its response, by route template, method and status",
    ["route", "method", "status"],
    buckets=COMMAND_BUCKETS,
)

Probe = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class MetricsSettings:
    port: int
    host: str = DEFAULT_HOST
    sample_seconds: float = DEFAULT_SAMPLE_SECONDS

    @classmethod
    def from_env(cls, service: str, env: Mapping[str, str] | None = None) -> MetricsSettings:
        env = os.environ if env is None else env
        try:
            port = int(env.get("METRICS_PORT", DEFAULT_PORTS.get(service, 0)))
            sample_seconds = float(env.get("METRICS_SAMPLE_SECONDS", DEFAULT_SAMPLE_SECONDS))
        except ValueError as error:
            raise ConfigurationError(f"METRICS_PORT or METRICS_SAMPLE_SECONDS is not a number: {error}") from None
        if not 0 <= port <= 65535:
            raise ConfigurationError(f"METRICS_PORT {port} is not a port (0 turns the exporter off)")
        if not sample_seconds > 0:
            raise ConfigurationError("METRICS_SAMPLE_SECONDS must be positive")
        return cls(port=port, host=env.get("METRICS_HOST", DEFAULT_HOST), sample_seconds=sample_seconds)

    @property
    def enabled(self) -> bool:
        return self.port != 0


class Exporter:
    """`/metrics` over HTTP from a thread of its own; `stop` closes the socket and joins the thread."""

    def __init__(self, server: WSGIServer, thread: threading.Thread, host: str) -> None:
        self._server = server
        self._thread = thread
        self.host = host
        self.port = server.server_port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def start_exporter(settings: MetricsSettings) -> Exporter | None:
    """None when METRICS_PORT is 0; ConfigurationError when the address cannot be served."""
    if not settings.enabled:
        return None
    try:
        server, thread = start_http_server(settings.port, addr=settings.host)
    except OSError as error:
        raise ConfigurationError(
            f"metrics cannot be served on {settings.host}:{settings.port} (METRICS_HOST, METRICS_PORT): {error}"
        ) from None
    return Exporter(server, thread, settings.host)


# Label lookups cached: the hot paths pay a dict hit, not prometheus_client's locked lookup.
@lru_cache(maxsize=1024)
def _command(command: str, outcome: str) -> tuple[Any, Any]:
    return COMMANDS.labels(command, outcome), COMMAND_SECONDS.labels(command, outcome)


@lru_cache(maxsize=8)
def _authorize(decision: str) -> tuple[Any, Any]:
    return AUTHORIZE.labels(decision), AUTHORIZE_SECONDS.labels(decision)


def command_observer(command: str) -> Callable[[Reply, float], None]:
    """For `reply_handler(..., observe=)`: counts a command's reply by outcome and times it."""

    def observe(reply: Reply, seconds: float) -> None:
        counter, histogram = _command(command, reply.error.code if reply.error is not None else "ok")
        counter.inc()
        histogram.observe(seconds)

    return observe


def observe_authorize(reply: Reply, seconds: float) -> None:
    """For `reply_handler(..., observe=)` on authorize: allowed, denied, or error (the request was refused)."""
    if not reply.ok:
        decision = "error"
    else:
        result = reply.result
        allowed = result.get("allowed") if isinstance(result, dict) else getattr(result, "allowed", False)
        decision = "allowed" if allowed else "denied"
    counter, histogram = _authorize(decision)
    counter.inc()
    histogram.observe(seconds)


class ConsumerMetrics:
    """A consumer's labelled series, looked up once: a batch pays no label look-ups."""

    def __init__(self, consumer: str) -> None:
        self._position = CONSUMER_POSITION.labels(consumer)
        self._lag = CONSUMER_LAG_SECONDS.labels(consumer)
        self._acked_through = -1  # the first reading is shown, 0 included

    def acked(self, through_stream_sequence: int, lags_seconds: list[float]) -> None:
        """The durable is acked through a stream sequence (never moves back: an ack floor read late, an
        old delivery acked); the lag of each event that ack covered."""
        if through_stream_sequence > self._acked_through:
            self._acked_through = through_stream_sequence
            self._position.set(through_stream_sequence)
        observe = self._lag.observe
        for lag in lags_seconds:
            observe(max(lag, 0.0))


@lru_cache(maxsize=1024)
def _http(route: str, method: str, status: int) -> tuple[Any, Any]:
    return HTTP_REQUESTS.labels(route, method, str(status)), HTTP_SECONDS.labels(route, method, str(status))


def http_answered(route: str, method: str, status: int, seconds: float) -> None:
    """An HTTP response of the edge. The route is a template (`/v1/orgs/{org_id}/members`), never a
    path: one series per route, not per organization."""
    counter, histogram = _http(route, method, status)
    counter.inc()
    histogram.observe(seconds)


def dead_lettered(consumer: str) -> None:
    DEAD_LETTERS.labels(consumer).inc()


def delivery_settled(result: str) -> None:
    SEND_ATTEMPTS.labels(result).inc()


async def sample(service: str, stop: asyncio.Event, *probes: Probe) -> None:
    """Runs the probes every METRICS_SAMPLE_SECONDS until `stop` is set; nothing when metrics are off."""
    settings = MetricsSettings.from_env(service)
    if not settings.enabled:
        return

    async def run_probes() -> None:
        await asyncio.gather(*(probe() for probe in probes))

    await every(settings.sample_seconds, run_probes, stop, failed="metrics sample failed")


def consumer_probe(consumer: ProjectionConsumer) -> Probe:
    """The consumer's pending counts, from JetStream."""
    name = consumer.settings.durable
    DEAD_LETTERS.labels(name)  # shown at 0 before the first one

    # The stream the durable lives on: MEMBERSHIP, or MEMBERSHIP_PARTITIONED_<N> under partitions, whose
    # sequences the position gauge counts in.
    stream_name = consumer.settings.partition.stream

    async def probe() -> None:
        info = await consumer.js.consumer_info(stream_name, name)
        CONSUMER_BEHIND.labels(name).set(info.num_pending or 0)
        CONSUMER_ACK_PENDING.labels(name).set(info.num_ack_pending or 0)
        stream = await consumer.js.stream_info(stream_name)
        CONSUMER_STREAM_LAST.labels(name).set(stream.state.last_seq)

    return probe


class _Relay(Protocol):
    position: int
    active: bool
    app: Any


def relay_probe(relay: _Relay) -> Probe:
    """How far the relay is behind the store, in notifications (the store read in a thread)."""

    async def probe() -> None:
        head = await asyncio.to_thread(relay.app.recorder.max_notification_id) or 0
        position = relay.position
        RELAY_ACTIVE.set(1 if relay.active else 0)
        RELAY_STORE.set(head)
        RELAY_PUBLISHED.set(position)
        RELAY_LAG.set(max(head - position, 0) if relay.active else 0)

    return probe


def deliveries_probe(counts: Callable[[], Awaitable[dict[str, int]]], statuses: list[str]) -> Probe:
    """The notifier's deliveries per status; a status with none reads 0."""

    async def probe() -> None:
        found = await counts()
        for status in {*statuses, *found}:
            DELIVERIES.labels(status).set(found.get(status, 0))

    return probe
