"""The key and subject layout of the coordination state (from the S2 design document)."""

from __future__ import annotations

from infrafabric.ids import OWNER_COMPLETED_PREFIX, OWNER_UNCLAIMED

UNCLAIMED = OWNER_UNCLAIMED  # the owner key's value of an announced task nobody holds
COMPLETED_PREFIX = OWNER_COMPLETED_PREFIX  # ... and of a finished one: completed:<swarm id>
SWARMS = "/swarms/"
TASKS = "/tasks/"
BLOCKERS = "/blockers/"
BLOCKER_TEAMS = "/blocker-teams/"  # blocker id -> {"swarm_id", "team"}: the team whose completion resolves it
HELP_PREFIX = "help-"
BLOCKER_EVENTS = "if.events.blocker_detected"
HELP_EVENTS = "if.events.help_assigned"
ORCHESTRATOR = "orchestrator"


def capabilities_key(swarm_id: str) -> str:
    return f"/swarms/{swarm_id}/capabilities"


def profile_key(swarm_id: str) -> str:
    return f"/swarms/{swarm_id}/profile"


def status_key(swarm_id: str) -> str:
    return f"/swarms/{swarm_id}/status"


def owner_key(task_id: str) -> str:
    return f"/tasks/{task_id}/owner"


def result_key(task_id: str) -> str:
    return f"/tasks/{task_id}/result"


def progress_key(task_id: str) -> str:
    return f"/tasks/{task_id}/progress"


def blocker_key(swarm_id: str, blocker_id: str) -> str:
    return f"/blockers/{swarm_id}/{blocker_id}"


def blocker_team_key(blocker_id: str) -> str:
    return f"{BLOCKER_TEAMS}{blocker_id}"


def help_task_id(request_id: str, helper: str) -> str:
    return f"{HELP_PREFIX}{request_id}-{helper}"


def inbox_subject(swarm_id: str) -> str:
    return f"if.swarm.{swarm_id}.tasks"
