"""Histories of claims, completions and blockers through coordinator-service replicas, and their checker.

Every operation a swarm makes is recorded with its invocation and completion time and its outcome, as
Jepsen records a history; the checker then holds the whole history, and what the store holds at the
end, to the coordination invariants:

* no task completed twice, and the stored completion names the swarm whose completion succeeded (or one
  whose completion's outcome is unknown); nothing is stored as completed that nobody tried to complete;
* no task owned by two swarms at once: while a swarm's claim is provably held (from the end of its won
  claim to the start of its successful completion), no other swarm may be told it won the task;
* every blocker is answered at most once, and each blocker whose report succeeded is answered.

Only intervals the history proves are used, so a violation is a real one: an operation whose outcome is
unknown (timeout, replica unreachable) may have happened at any point of its interval, or not at all.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

Outcome = Literal["won", "lost", "ok", "stale", "unknown"]


@dataclass(frozen=True)
class Op:
    swarm: str
    op: Literal["claim", "complete"]
    task: str
    invoked: float
    completed: float
    outcome: Outcome

    def as_list(self) -> list[object]:
        return [self.swarm, self.op, self.task, self.invoked, self.completed, self.outcome]


def check_claims(history: list[Op], stored_owner: dict[str, str | None]) -> list[str]:
    """``stored_owner``: each task's owner key at the end (``completed:<swarm>``, a swarm id, or None)."""
    violations: list[str] = []
    by_task: dict[str, list[Op]] = defaultdict(list)
    for op in history:
        by_task[op.task].append(op)
    for task in sorted(set(by_task) | set(stored_owner)):
        ops = by_task.get(task, [])
        done = [o for o in ops if o.op == "complete" and o.outcome == "ok"]
        maybe = {o.swarm for o in ops if o.op == "complete" and o.outcome in ("ok", "unknown")}
        if len(done) > 1:
            violations.append(f"{task}: completed twice ({', '.join(o.swarm for o in done)})")
        stored = stored_owner.get(task)
        if stored is not None and stored.startswith("completed:"):
            who = stored.removeprefix("completed:")
            if who not in maybe:
                violations.append(f"{task}: stored as completed by {who}, whose completion never succeeded")
            if done and done[0].swarm != who:
                violations.append(f"{task}: {done[0].swarm}'s completion succeeded but the store names {who}")
        elif done:
            violations.append(f"{task}: {done[0].swarm}'s completion succeeded but the store holds {stored!r}")
        for finish in done:  # the finisher held the task from its last won claim to this completion
            wins = [o for o in ops if o.swarm == finish.swarm and o.op == "claim" and o.outcome == "won"
                    and o.completed <= finish.invoked]
            if not wins:
                violations.append(f"{task}: {finish.swarm} completed it without a won claim")
                continue
            held_from = max(o.completed for o in wins)
            for other in ops:
                if other.op == "claim" and other.outcome == "won" and other.swarm != finish.swarm \
                        and other.invoked >= held_from and other.completed <= finish.invoked:
                    violations.append(f"{task}: {other.swarm} was told it won while {finish.swarm} held it")
    return violations


def check_blockers(reported: dict[str, str], unknown_reports: int, answers: Mapping[str, Sequence[Hashable]],
                   ended_with_reporter: frozenset[str] | set[str] = frozenset()) -> list[str]:
    """``reported``: blocker id → outcome of its report (``ok``); ``unknown_reports``: reports whose
    outcome is unknown (their ids never reached the swarm, but they may have been raised and answered);
    ``answers``: blocker id → the team of every announcement seen (help assigned, or escalated: no team);
    ``ended_with_reporter``: blockers whose reporter's session ended after the report (a blocker lives on
    its reporter's session lease, so one whose reporter died unanswered is gone by design, not lost).

    Announcements are at least once (one stored with its answer is published again until the bus has
    confirmed it), so a blocker may be announced twice; it must never be answered twice, i.e. with two
    different teams."""
    violations = [f"blocker {b} answered with {len(set(teams))} different teams"
                  for b, teams in sorted(answers.items()) if len(set(teams)) > 1]
    violations += [f"blocker {b} was never answered" for b, outcome in sorted(reported.items())
                   if outcome == "ok" and not answers.get(b) and b not in ended_with_reporter]
    unreported = sorted(b for b in answers if answers[b] and b not in reported)
    if len(unreported) > unknown_reports:
        violations += [f"blocker {b} answered but never reported" for b in unreported]
    return violations
