"""What a PoOT repository declares it does beyond the seed's four methods, and what the validator makes of it."""

from __future__ import annotations

from datetime import UTC, datetime
from unittest.mock import AsyncMock

from lucid.node.db.poot_repo import SqlPoOTRepository
from lucid.node.models.node_models import Node
from lucid.node.poot import PoOTValidator
from lucid.node.poot.repository import RepositoryTraits, traits_of


def _mock() -> AsyncMock:
    repo = AsyncMock()
    repo.get_by_id.return_value = Node(status="active")
    repo.get_by_nonce.return_value = None
    repo.get_recent_validations.return_value = []
    return repo


def test_a_mock_declares_nothing_and_the_sql_repository_declares_what_it_does() -> None:
    assert traits_of(AsyncMock()) == RepositoryTraits()  # a mock answers any attribute, but not its class's
    assert traits_of(object()) == RepositoryTraits()
    assert SqlPoOTRepository.traits == RepositoryTraits(True, True, True)

    class Odd:
        traits = "caches everything"  # not a RepositoryTraits: ignored

    assert traits_of(Odd()) == RepositoryTraits()


async def test_the_nonce_is_looked_up_first_unless_the_repository_records_replays_itself() -> None:
    plain = _mock()
    await PoOTValidator(plain).validate_poot("node_a_001", "out", datetime.now(UTC), "nonce-aaaa1")
    assert plain.get_by_nonce.await_count == 1
    recording = _mock()
    validator = PoOTValidator(recording, traits=RepositoryTraits(records_nonce_replays=True))
    await validator.validate_poot("node_a_001", "out", datetime.now(UTC), "nonce-aaaa2")
    assert recording.get_by_nonce.await_count == 0
    assert recording.save_validation.await_args.kwargs["claim_nonce"] is True  # the claim is in the store


async def test_a_live_score_window_is_used_only_when_the_repository_keeps_one() -> None:
    plain = _mock()
    await PoOTValidator(plain).validate_poot("node_a_001", "out", datetime.now(UTC), "nonce-bbbb1")
    assert plain.get_score_window.await_count == 0 and plain.get_recent_validations.await_count == 1
