"""One ack per batch on an `AckPolicy.ALL` durable, and never an ack past a message not handled.

Under `AckPolicy.ALL` an ack of stream sequence `s` acknowledges every pending message at or below
`s`: those nacked with a delay (a gap, a retry), those delivered to a process that crashed, those
lost on a dropped connection, those another instance holds. (A `term` does the same, so a dead letter
is not termed: the next ack covers it.) So the consumer acks the highest `s` below which every pending
message is one it has seen and handled (applied, a duplicate, or dead-lettered, committed either way).

It knows every pending message when it has seen every delivery since a moment when it knew them all.
Deliveries are numbered by the server (the consumer sequence), one number per delivery, redeliveries
included: a number skipped means a delivery it did not see, and it stops acking. It knows them all
again when the server's count of pending messages (everything delivered above the ack floor) equals
the number of those it holds, and the last delivery was its own (`confirm`, from the consumer's info).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar


class Sequences(Protocol):
    @property
    def stream(self) -> int: ...

    @property
    def consumer(self) -> int: ...


class Metadata(Protocol):
    @property
    def sequence(self) -> Sequences: ...


class Delivery(Protocol):
    """What of a message this needs: its place on the stream and its delivery's number."""

    @property
    def metadata(self) -> Metadata: ...


M = TypeVar("M", bound=Delivery)


@dataclass
class _Held(Generic[M]):
    message: M
    handled: bool = False


class AckFrontier(Generic[M]):
    """The messages delivered and not yet acked, by stream sequence, and which of them are handled."""

    def __init__(self) -> None:
        self.knows_all = False
        self._next_delivery = 0
        self._acked_delivery = 0
        self._held: dict[int, _Held[M]] = {}

    def resume(self, delivered: int, ack_floor_delivery: int, ack_pending: int) -> None:
        """The consumer's state as this process starts pulling (again): it knows everything only if
        nothing is pending. What it held before is forgotten: after a handover another instance may
        have acked it, and an entry never acked or pruned would stop every ack below it for good."""
        self._held.clear()
        self._next_delivery = delivered + 1
        self._acked_delivery = ack_floor_delivery
        self.knows_all = ack_pending == 0

    def received(self, messages: Sequence[M]) -> None:
        for message in messages:
            sequence = message.metadata.sequence
            if sequence.consumer != self._next_delivery:
                self.knows_all = False  # a delivery this process did not see
            self._next_delivery = sequence.consumer + 1
            self._held[sequence.stream] = _Held(message)

    def settled(self, message: M) -> None:
        """`message` is handled: applied or skipped as a duplicate, or dead-lettered, and committed."""
        held = self._held.get(message.metadata.sequence.stream)
        if held is not None and held.message is message:
            held.handled = True

    def confirm(self, ack_floor: int, ack_floor_delivery: int, delivered: int, ack_pending: int) -> None:
        """The consumer's info read between two fetches: forget what is acked; know all again if every
        pending message is one held here and the last delivery was to this process."""
        for stream_sequence in [s for s in self._held if s <= ack_floor]:
            del self._held[stream_sequence]
        self._acked_delivery = max(self._acked_delivery, ack_floor_delivery)
        if delivered == self._next_delivery - 1 and ack_pending == len(self._held):
            self.knows_all = True

    def to_ack(self) -> M | None:
        """The message to ack now, or None; what it acknowledges is forgotten.

        The server ignores an ack whose delivery number is not above the last acked one (an old
        delivery, behind a redelivery acked since), so the message is the highest of the handled
        prefix among those delivered after that; what lies above it comes back and is acked later."""
        if not self.knows_all:
            return None
        chosen: M | None = None
        for stream_sequence in sorted(self._held):
            held = self._held[stream_sequence]
            if not held.handled:
                break
            if held.message.metadata.sequence.consumer > self._acked_delivery:
                chosen = held.message
        if chosen is None:
            return None
        through = chosen.metadata.sequence.stream
        for stream_sequence in [s for s in self._held if s <= through]:
            del self._held[stream_sequence]
        self._acked_delivery = chosen.metadata.sequence.consumer
        return chosen

    @property
    def held(self) -> int:
        return len(self._held)
