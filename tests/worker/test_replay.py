"""`collector replay`: listing, requeueing and purging dead letters, on a real Redis."""

from __future__ import annotations

import pytest

from collector.cli import main
from collector.storage.outbox import decode_entry, outbox_key
from tests.conftest import OTHER_SITE, SITE
from tests.factories import make_delivery
from worker.dead_letters import DeadLetters
from worker.delivery import Attempt, Outcome


@pytest.fixture
def dead_letters(redis_client, redis_url, monkeypatch) -> DeadLetters:
    """Three dead letters: two 401s of other_store's Commerce, one 422 of test_store's Depict."""
    monkeypatch.setenv("REDIS_URL", redis_url)
    letters = DeadLetters(redis_client)
    letters.add([Attempt(make_delivery(OTHER_SITE, "commerce", n), Outcome.DEAD, status=401, answer="Unauthorized") for n in (1, 2)], 1)
    letters.add([Attempt(make_delivery(SITE, "depict", 3), Outcome.DEAD, status=422, answer="bad")], 1)
    return letters


def run(config_file, *args: str) -> int:
    return main(["replay", "--config", str(config_file), *args])


def test_list_shows_what_would_be_requeued_and_moves_nothing(dead_letters, config_file, redis_client, capsys):
    """--list prints the matching letters with status and reason, and leaves them where they are."""
    assert run(config_file, "--list", "--status", "401") == 0
    out, err = capsys.readouterr()
    assert out.count("\t401\t") == 2 and "would requeue 2 dead-lettered deliveries" in err
    assert len(dead_letters) == 3 and not redis_client.exists(outbox_key(OTHER_SITE, "commerce"))


def test_replay_requeues_only_the_filtered_letters_with_their_ids(dead_letters, config_file, redis_client, capsys):
    """Replaying one site's Commerce letters puts them, unchanged, in that outbox and keeps the others."""
    assert run(config_file, "--site", OTHER_SITE, "--destination", "commerce") == 0
    assert "requeued 2 dead-lettered deliveries" in capsys.readouterr().err
    entries = redis_client.lrange(outbox_key(OTHER_SITE, "commerce"), 0, -1)
    requeued = [delivery for entry in entries for delivery in decode_entry(entry)]
    assert sorted(entry["id"] for entry in requeued) == [f"commerce-{OTHER_SITE}-1", f"commerce-{OTHER_SITE}-2"]
    assert [letter.delivery["site"] for letter in dead_letters] == [SITE]


def test_purge_deletes_only_the_filtered_letters_for_good(dead_letters, config_file, redis_client, capsys):
    """--purge removes the matching letters without requeueing them; the rest stay."""
    assert run(config_file, "--purge", "--status", "422") == 0
    assert "purged 1 dead-lettered deliveries" in capsys.readouterr().err
    assert sorted(letter.status for letter in dead_letters) == [401, 401]
    assert not redis_client.exists(outbox_key(SITE, "depict"))


def test_list_and_purge_cannot_be_combined(config_file):
    """Asking to both list and purge is a usage error, not a guess."""
    with pytest.raises(SystemExit) as exit_info:
        run(config_file, "--list", "--purge")
    assert exit_info.value.code == 2
