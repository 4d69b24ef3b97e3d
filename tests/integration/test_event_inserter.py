"""The library's own recorder tests, run against the event writer's statements.

`EventInserter` writes the library's tables without the library (the save on the loop,
`services/membership/event_writer.py`). Here a recorder that is the library's in every way but its
`insert_events`, which runs the inserter's transaction, goes through the library's test cases for
application recorders: inserts and selects, contiguous notification ids, conflicts refused, and
two writers racing without interleaving their notification ids. Each thread writes on a connection
of its own, so the races are real on PostgreSQL.

Not run: the library's `test_performance`, which times 100 inserts and prints the rate, asserting
nothing (the event writer's figures are in `make bench`; this suite has no timed assertions). It is
set to None on the subclass, so unittest's loader and pytest do not collect it: neither a pass nor a
skip is counted for it. The library's `test_concurrent_throughput` runs as it is: four threads insert
batches of 50 at once and it fails if any insert raised; the rate it prints is not checked.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest
from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresDatastore
from eventsourcing.tests.persistence import ApplicationRecorderTestCase, NonInterleavingNotificationIDsBaseCase

from services.membership.event_writer import EventInserter
from services.membership.recorders import PostgresCommandRecorder
from shared.settings import postgres_env


class InserterBackedRecorder(PostgresCommandRecorder):
    def __init__(self, datastore: PostgresDatastore, database_url: str) -> None:
        super().__init__(datastore, events_table_name="membership_events")
        self._database_url = database_url
        self._per_thread = threading.local()
        self._inserters: list[tuple[asyncio.AbstractEventLoop, EventInserter]] = []
        self._inserters_lock = threading.Lock()

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        loop, inserter = self._own_inserter()
        return loop.run_until_complete(inserter.insert_events(stored_events, **kwargs))

    def _own_inserter(self) -> tuple[asyncio.AbstractEventLoop, EventInserter]:
        if not hasattr(self._per_thread, "inserter"):
            pair = (asyncio.new_event_loop(), EventInserter(self, self._database_url, timedelta(hours=24)))
            self._per_thread.inserter = pair
            with self._inserters_lock:
                self._inserters.append(pair)
        return self._per_thread.inserter

    def close_inserters(self) -> None:
        for loop, inserter in self._inserters:
            loop.run_until_complete(inserter.close())
            loop.close()
        self._inserters.clear()


class OnPostgres:
    """Each test on a database of its own, through the project's PostgreSQL server."""

    database_url: str
    recorders: list[InserterBackedRecorder]

    @pytest.fixture(autouse=True)
    def _database(self, database_url: str):
        self.database_url = database_url
        self.recorders = []
        yield
        for recorder in self.recorders:
            recorder.close_inserters()
            recorder.datastore.close()

    def create_recorder(self) -> InserterBackedRecorder:
        env = postgres_env(self.database_url, pool_size=8)
        datastore = PostgresDatastore(
            dbname=env["POSTGRES_DBNAME"],
            host=env["POSTGRES_HOST"],
            port=env["POSTGRES_PORT"],
            user=env["POSTGRES_USER"],
            password=env["POSTGRES_PASSWORD"],
            pool_size=8,
        )
        recorder = InserterBackedRecorder(datastore, self.database_url)
        recorder.create_table()
        self.recorders.append(recorder)
        return recorder


class TestTheLibrarysApplicationRecorderCases(OnPostgres, ApplicationRecorderTestCase[InserterBackedRecorder]):
    test_performance = None  # timing only, no assertion (see the module's docstring): not collected


class TestTheLibrarysNonInterleavingCase(OnPostgres, NonInterleavingNotificationIDsBaseCase):
    insert_num = 500
