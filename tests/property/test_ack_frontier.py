"""`AckFrontier` against a model of a JetStream `AckPolicy.ALL` consumer: random batches, naks, lost
deliveries, redeliveries, other pullers, process restarts and handovers (the pull lock lost and taken
back by the same process, its frontier reused). Whatever it acks, every message at or below the acked
stream sequence has been handled (by this process, or by whoever else acked it); and once it alone
pulls and handles everything, everything is acked."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import example, given, settings
from hypothesis import strategies as st

from shared.acks import AckFrontier


@dataclass(frozen=True)
class Sequence:
    stream: int
    consumer: int


@dataclass(frozen=True)
class Metadata:
    sequence: Sequence


@dataclass(frozen=True, eq=False)
class Message:
    metadata: Metadata


class Server:
    """The part of an `AckPolicy.ALL` consumer that matters: pending messages, the ack floor, deliveries."""

    def __init__(self, messages: int) -> None:
        self.last = messages
        self.next_new = 1
        self.delivered = 0
        self.floor = 0
        self.floor_delivery = 0
        self.pending: set[int] = set()
        self.due: set[int] = set()  # pending and due again: nak'd, or past ack_wait

    def deliver(self, count: int) -> list[Message]:
        """Redeliveries due first (lowest first), then new messages, as the server serves a pull."""
        batch = []
        for stream_sequence in sorted(self.due & self.pending)[:count]:
            self.due.discard(stream_sequence)
            batch.append(self._delivery(stream_sequence))
        while len(batch) < count and self.next_new <= self.last:
            self.pending.add(self.next_new)
            batch.append(self._delivery(self.next_new))
            self.next_new += 1
        return batch

    def _delivery(self, stream_sequence: int) -> Message:
        self.delivered += 1
        return Message(Metadata(Sequence(stream_sequence, self.delivered)))

    def ack(self, message: Message) -> None:
        sequence = message.metadata.sequence
        if sequence.consumer <= self.floor_delivery or sequence.stream <= self.floor:
            return  # what nats-server does with an ack it has already passed
        self.floor, self.floor_delivery = sequence.stream, sequence.consumer
        self.pending = {s for s in self.pending if s > sequence.stream}


steps = st.lists(
    st.tuples(
        st.sampled_from(["batch", "batch", "lost", "other", "restart", "handover", "confirm", "ack_wait"]),
        st.integers(1, 6),  # batch size
        st.lists(st.booleans(), min_size=6, max_size=6),  # which of the batch are handled
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(steps)
@example([("batch", 1, [False] * 6), ("other", 1, [True] * 6), ("handover", 1, [True] * 6)])  # a stale nak'd entry
def test_an_ack_never_covers_a_message_not_handled(steps):
    server = Server(messages=60)
    handled: set[int] = set()
    frontier: AckFrontier[Message] = AckFrontier()
    frontier.resume(server.delivered, server.floor_delivery, len(server.pending))

    def ack_if_any():
        message = frontier.to_ack()
        if message is not None:
            through = message.metadata.sequence.stream
            assert set(range(1, through + 1)) <= handled | set(range(1, server.floor + 1))
            server.ack(message)

    for kind, size, outcomes in steps:
        if kind == "restart":  # a new process: what the old one held is unknown
            frontier = AckFrontier()
            frontier.resume(server.delivered, server.floor_delivery, len(server.pending))
        elif kind == "handover":  # the lock lost and taken back: the same frontier, pulling again
            frontier.resume(server.delivered, server.floor_delivery, len(server.pending))
        elif kind == "lost":  # delivered, never seen (a dropped connection, a crash mid-batch)
            server.deliver(size)
        elif kind == "other":  # another puller handles what it gets and acks the whole of it
            batch = server.deliver(size)
            handled.update(m.metadata.sequence.stream for m in batch)
            if batch and all(s in handled for s in range(server.floor + 1, max(m.metadata.sequence.stream for m in batch) + 1)):
                server.ack(max(batch, key=lambda m: m.metadata.sequence.stream))
        elif kind == "ack_wait":  # every pending message is due again
            server.due |= server.pending
        elif kind == "confirm":
            frontier.confirm(server.floor, server.floor_delivery, server.delivered, len(server.pending))
            ack_if_any()
        else:
            batch = server.deliver(size)
            frontier.received(batch)
            for message, ok in zip(batch, outcomes, strict=False):
                if ok:
                    handled.add(message.metadata.sequence.stream)
                    frontier.settled(message)
                else:  # nak'd
                    server.due.add(message.metadata.sequence.stream)
            ack_if_any()

    # Then this process alone pulls and handles everything: it acks everything.
    for _ in range(40):
        if not server.due & server.pending:  # ack_wait: what is pending comes back
            server.due |= server.pending
        batch = server.deliver(6)
        frontier.received(batch)
        for message in batch:
            handled.add(message.metadata.sequence.stream)
            frontier.settled(message)
        ack_if_any()
        if not frontier.knows_all:  # as the consumer does: it reads the consumer's info only then
            frontier.confirm(server.floor, server.floor_delivery, server.delivered, len(server.pending))
            ack_if_any()
    assert server.floor == server.last and not server.pending, f"acked through {server.floor} of {server.last}"


def test_a_batch_handled_in_full_is_acked_once_through_its_last_message():
    server = Server(messages=5)
    frontier: AckFrontier[Message] = AckFrontier()
    frontier.resume(0, 0, 0)
    batch = server.deliver(5)
    frontier.received(batch)
    for message in batch:
        frontier.settled(message)
    assert frontier.to_ack() is batch[-1]
    assert frontier.to_ack() is None


def test_the_ack_stops_below_a_message_not_handled_and_passes_it_once_it_is():
    server = Server(messages=5)
    frontier: AckFrontier[Message] = AckFrontier()
    frontier.resume(0, 0, 0)
    batch = server.deliver(5)
    frontier.received(batch)
    for message in batch[:2] + batch[3:]:
        frontier.settled(message)
    assert frontier.to_ack() is batch[1]
    server.ack(batch[1])
    server.due.add(3)  # the third was nak'd
    again = server.deliver(1)  # and comes back
    frontier.received(again)
    frontier.settled(again[0])
    assert frontier.to_ack() is batch[4]  # delivered after the last ack: the server takes it
    server.ack(batch[4])
    assert server.pending == set()
