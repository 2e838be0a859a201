"""Verifying the chains: pure, no I/O (``AuditLog.verify`` reads the rows and the key).

Each writer's chain must run seq 1, 2, 3 ... without a gap, every record's MAC must recompute
under the audit key, and every record's ``prev_mac`` must be the MAC of the record before it
(``GENESIS`` for seq 1). Against a checkpoint, each chain it names must reach at least the
checkpointed head, with the same MAC there. The first failing record of each chain is named,
with what happened to it:

- ``missing``: a seq number is absent (a record deleted);
- ``modified``: the MAC does not recompute, and the next record (or the checkpoint) still
  vouches for the stored MAC (a field changed in place);
- ``reordered``: the record is authentic but stands at another position (its MAC recomputes
  under another seq, or its predecessor is not the record it was chained to);
- ``inserted``: the MAC does not recompute and no record vouches for it (a forged record; a
  changed last record looks the same, which the next checkpoint tells apart);
- ``cut_short``: a chain ends before the head a checkpoint recorded (its tail deleted).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import groupby

from audit.encoding import GENESIS, MacKey, mac_of
from store.base import AuditRecord


@dataclass(frozen=True)
class Head:
    seq: int
    mac: str


@dataclass(frozen=True)
class Problem:
    writer: str
    seq: int
    kind: str  # missing, modified, reordered, inserted, cut_short
    text: str

    def __str__(self) -> str:
        return f"chain {self.writer} seq {self.seq}: {self.kind}: {self.text}"


@dataclass(frozen=True)
class VerifyReport:
    chains: Mapping[str, int]  # records per writer
    problems: Sequence[Problem] = field(default_factory=tuple)  # the first of each failing chain

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def records(self) -> int:
        return sum(self.chains.values())


def verify_rows(rows: Sequence[AuditRecord], key: MacKey, checkpoint: Mapping[str, Head] | None = None) -> VerifyReport:
    """``rows`` ordered by writer, then seq (``AuditStore.audit_chains``)."""
    chains: dict[str, int] = {}
    problems: list[Problem] = []
    for writer, group in groupby(rows, key=lambda r: r.writer):
        chain = list(group)
        chains[writer] = len(chain)
        head = None if checkpoint is None else checkpoint.get(writer)
        problem = _check_chain(writer, chain, key, head)
        if problem is None and head is not None:
            problem = _check_head(writer, chain, head)
        if problem is not None:
            problems.append(problem)
    for writer, head in sorted((checkpoint or {}).items()):
        if writer not in chains:
            problems.append(Problem(writer, 1, "cut_short", f"the chain is gone; the checkpoint has seq {head.seq}"))
    return VerifyReport(chains, tuple(problems))


def _check_chain(writer: str, chain: Sequence[AuditRecord], key: MacKey, head: Head | None) -> Problem | None:
    # A MAC some record (or the checkpoint) was chained to was once genuine.
    vouched = {r.prev_mac for r in chain} | ({head.mac} if head else set())
    expected, prev = 1, GENESIS
    for record in chain:
        if record.seq != expected:
            return Problem(writer, expected, "missing", f"the chain jumps from seq {expected - 1} to {record.seq}")
        if mac_of(key, record) != record.mac:
            return _bad_mac(writer, chain, record, key, vouched)
        if record.prev_mac != prev:
            return Problem(writer, record.seq, "reordered", "authentic, but not chained to the record before it")
        expected, prev = record.seq + 1, record.mac
    return None


def _bad_mac(writer: str, chain: Sequence[AuditRecord], record: AuditRecord, key: MacKey, vouched: set[str]) -> Problem:
    for other in chain:
        if other.seq != record.seq and mac_of(key, record, seq=other.seq) == record.mac:
            return Problem(writer, record.seq, "reordered", f"the record written as seq {other.seq} stands here")
    if record.mac in vouched:
        return Problem(writer, record.seq, "modified", f"the MAC does not match its content ({record.event})")
    return Problem(
        writer, record.seq, "inserted", f"the MAC does not verify and no record vouches for it ({record.event})"
    )


def _check_head(writer: str, chain: Sequence[AuditRecord], head: Head) -> Problem | None:
    last = chain[-1]
    if last.seq < head.seq:
        return Problem(
            writer, last.seq + 1, "cut_short", f"the chain ends at seq {last.seq}; the checkpoint has {head.seq}"
        )
    at_head = next(r for r in chain if r.seq == head.seq)
    if at_head.mac != head.mac:
        return Problem(writer, head.seq, "modified", "the MAC differs from the checkpoint's")
    return None
