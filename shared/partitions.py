"""Projections scaled out by partition: which organizations one instance of a projector owns.

With `PARTITIONS=1` (the default) a projector reads `MEMBERSHIP` itself through the durable named
after the service, as it always has. With `PARTITIONS=N` (N > 1) it reads the stream
`MEMBERSHIP_PARTITIONED_<N>`, which sources `MEMBERSHIP` through a subject transform:

    membership.events.<org_id>.<EventType>
      -> partitioned.<N>.<p>.membership.events.<org_id>.<EventType>,  p = {{partition(N,1)}}

`partition(N,1)` hashes the organization's token, so all the events of one organization land in one
partition, in stream order. The instance configured with `PARTITION=p` consumes
`partitioned.<N>.<p>.>` through the durable `<service>-p<p>`. Contract subscribers never see these
subjects: `MEMBERSHIP` is unchanged.

The stream's name carries N, so changing N declares a new, complete stream (sourced from the first
message of `MEMBERSHIP`) instead of mixing two partitionings in one: see deploy/README.md.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from . import subjects
from .settings import ConfigurationError, integer_setting

MAX_PARTITIONS = 64  # a projector instance per core; far more than that is a mistake, not a plan
PARTITIONED_STREAM_PREFIX = "MEMBERSHIP_PARTITIONED"
PARTITIONED_SUBJECT_PREFIX = "partitioned"


@dataclass(frozen=True)
class Partition:
    """This instance's share: partition `index` of `count`."""

    count: int = 1
    index: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.count <= MAX_PARTITIONS:
            raise ConfigurationError(f"PARTITIONS must be between 1 and {MAX_PARTITIONS}, not {self.count}")
        if not 0 <= self.index < self.count:
            raise ConfigurationError(f"PARTITION must be between 0 and PARTITIONS - 1 = {self.count - 1}, not {self.index}")

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Partition:
        """`PARTITIONS` (N, default 1) and `PARTITION` (this instance's p, default 0)."""
        env = dict(os.environ if env is None else env)
        return cls(count=integer_setting(env, "PARTITIONS", 1), index=integer_setting(env, "PARTITION", 0))

    @property
    def partitioned(self) -> bool:
        return self.count > 1

    @property
    def stream(self) -> str:
        return partitioned_stream(self.count) if self.partitioned else subjects.STREAM

    @property
    def filter_subject(self) -> str:
        if not self.partitioned:
            return subjects.EVENTS_WILDCARD
        return f"{PARTITIONED_SUBJECT_PREFIX}.{self.count}.{self.index}.>"

    def durable(self, service: str) -> str:
        return f"{service}-p{self.index}" if self.partitioned else service

    def describe(self) -> str:
        return f"partition {self.index} of {self.count}" if self.partitioned else "unpartitioned"


def partitioned_stream(count: int) -> str:
    return f"{PARTITIONED_STREAM_PREFIX}_{count}"


def partition_transform(count: int) -> tuple[str, str]:
    """The subject transform (source, destination) from `MEMBERSHIP` into `MEMBERSHIP_PARTITIONED_<count>`."""
    source = "membership.events.*.*"
    destination = f"{PARTITIONED_SUBJECT_PREFIX}.{count}.{{{{partition({count},1)}}}}.membership.events.{{{{wildcard(1)}}}}.{{{{wildcard(2)}}}}"
    return source, destination


def original_subject(subject: str) -> str:
    """`membership.events.<org_id>.<EventType>` from a partitioned subject (unchanged when it is not one)."""
    if subject.startswith(PARTITIONED_SUBJECT_PREFIX + "."):
        parts = subject.split(".", 3)
        if len(parts) == 4:
            return parts[3]
    return subject
