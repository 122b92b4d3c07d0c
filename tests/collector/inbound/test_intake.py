"""Budgets a page cannot step around: a minute of one address rotating ids at full speed beside an honest visitor."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import replace

from collector import create_app
from collector.config.schema import SiteLimits
from collector.inbound.intake import address_events_per_minute
from tests.collector.inbound.test_collect import post
from tests.conftest import SITE
from tests.factories import make_event

SCENARIO_SECONDS = 60
SITE_EVENTS_PER_MINUTE = 6000
ATTACKER, HONEST = "198.51.100.66", "203.0.113.10"


def test_an_address_rotating_ids_at_full_speed_cannot_crowd_out_an_honest_visitor(site_config, redis_url):
    """For a minute one address sends 10-event batches as fast as it can, with a new anonymous id and no cookie
    each time, while a visitor at another address sends one request a second: the visitor never gets a 429, and
    the attacker's accepted events stay within the per-address budget in every clock minute."""
    sites = dict(site_config.sites)
    sites[SITE] = replace(sites[SITE], limits=SiteLimits(events_per_minute=SITE_EVENTS_PER_MINUTE))
    app = create_app({"COLLECTOR_CONFIG": replace(site_config, sites=sites), "REDIS_URL": redis_url, "TESTING": True})
    per_address = address_events_per_minute(sites[SITE])
    accepted_by_minute: Counter[int] = Counter()
    attacker_answers: Counter[int] = Counter()
    honest_answers: list[int] = []
    stop = threading.Event()

    def attack() -> None:
        number = 0
        while not stop.is_set():
            number += 1
            client = app.test_client()  # no cookie jar carried over
            client.environ_base["REMOTE_ADDR"] = ATTACKER
            events = [make_event("page_view", anonymous_id=f"rotating_{number:08d}") for _ in range(10)]
            answer = post(client, {"site": SITE, "events": events})
            attacker_answers[answer.status_code] += 1
            if answer.status_code == 202:
                accepted_by_minute[int(time.time() // 60)] += answer.json["accepted"]

    def visit() -> None:
        client = app.test_client()
        client.environ_base["REMOTE_ADDR"] = HONEST
        while not stop.wait(1.0):
            honest_answers.append(post(client, {"site": SITE, "events": [make_event("page_view")]}).status_code)

    threads = [threading.Thread(target=attack), threading.Thread(target=visit)]
    for thread in threads:
        thread.start()
    time.sleep(SCENARIO_SECONDS)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)

    print(f"\nattacker: {dict(attacker_answers)} answers, accepted per clock minute {dict(accepted_by_minute)} "
          f"(per-address budget {per_address}); honest visitor: {Counter(honest_answers)}")  # fmt: skip
    assert attacker_answers[429] > 0, "the attacker was never refused: the scenario did not test the budget"
    assert len(honest_answers) >= SCENARIO_SECONDS // 2 and set(honest_answers) == {202}
    assert max(accepted_by_minute.values()) <= per_address
