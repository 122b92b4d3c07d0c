"""The console's debugger: traced deliveries, the tail's source and status, find, time ranges and the event page, on a real Redis."""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import time

import pytest

from collector import create_app
from collector.config.schema import ConsoleSettings
from collector.observe.live_tail import record_refusal
from collector.storage.delivery_stats import JobFigures, record_job
from collector.storage.delivery_trace import ATTEMPTS_KEPT, TRACE_FIELD, TraceBudget, trace_key
from collector.storage.outbox import decode_entry, outbox_key
from tests.conftest import BROWSER_WRITE_KEY, COMMERCE_KEY, DEPICT_KEY, ORIGIN, SERVER_WRITE_KEY, SITE
from tests.factories import make_event, make_segment_message
from worker.dead_letters import DeadLetters
from worker.delivery import Attempt, Outcome
from worker.runtime import WorkerRuntime
from worker.trace import attempt_records, masked_body, masked_headers

TOKEN = "console-token-for-the-tests-0123"
PERSON = "jane.doe@example.com"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
PRODUCT = "SKU-RED-42"


@pytest.fixture
def console_config(site_config):
    return dataclasses.replace(site_config, console=ConsoleSettings(token=TOKEN))


@pytest.fixture
def console_app(console_config, redis_url):
    return create_app({"COLLECTOR_CONFIG": console_config, "REDIS_URL": redis_url, "TESTING": True})


@pytest.fixture
def console(console_app):
    return console_app.test_client()


@pytest.fixture
def runtime(console_config, redis_client):
    """A delivery process's runtime (its sender thread included) with the console on."""
    started = WorkerRuntime.start(console_config, redis_client)
    try:
        yield started
    finally:
        started.close()


def collect(client, *events: dict, site: str = SITE):
    answer = client.post("/collect", data=json.dumps({"site": site, "events": list(events)}), headers={"Origin": ORIGIN})
    assert answer.status_code == 202, answer.data
    return answer


def queued(redis_client, destination: str) -> list[dict]:
    return [delivery for entry in redis_client.lrange(outbox_key(SITE, destination), 0, -1) for delivery in decode_entry(entry)]


def tail_events(client, **query) -> list[dict]:
    answer = client.get("/console/api/events", query_string=query, headers=BEARER)
    assert answer.status_code == 200, answer.data
    return [event for site in answer.get_json()["sites"] for event in site["events"]]


def work(runtime, redis_client, destination: str, outcome: Outcome, status: int, answer: str = "", job_try: int = 1) -> list[Attempt]:
    """What a job does with the queued deliveries of ``destination``: one attempt each, recorded as the job records its figures."""
    attempts = [Attempt(d, outcome, status=status, answer=answer, seconds=0.042) for d in queued(redis_client, destination)]
    record_job(redis_client, JobFigures(SITE, destination, traces=attempt_records(runtime, attempts, job_try, [])))
    if outcome is Outcome.DEAD:
        runtime.dead_letters.add(attempts, job_try)
    return attempts


def purchase(**props) -> dict:
    return make_event("purchase", user_id=PERSON, props={"product_id": PRODUCT, "entity_price": "100", "currency": "USD", **props})


# tracing -----------------------------------------------------------------------


def test_with_the_console_off_no_delivery_is_traced_and_the_worker_records_nothing(client, redis_client, site_config):
    """Without ``[console]``, outbox entries carry no trace mark and a job's attempts add no record: delivery pays nothing."""
    collect(client, purchase())
    [delivery] = queued(redis_client, "commerce")
    assert TRACE_FIELD not in delivery
    runtime = WorkerRuntime.start(site_config, redis_client)
    try:
        marked = {**delivery, TRACE_FIELD: 1}
        assert attempt_records(runtime, [Attempt(marked, Outcome.DELIVERED, status=200)], 1, []) == []
    finally:
        runtime.close()


def test_the_trace_budget_allows_so_many_events_a_second_then_says_no_until_the_next():
    """A batch is traced while the second's budget lasts; the next batch over it is not, and the next second starts afresh."""
    now = [100.2]
    budget = TraceBudget(per_second=5, clock=lambda: now[0])
    assert budget.take(3) and budget.take(2)
    assert not budget.take(1)
    now[0] = 101.0
    assert budget.take(5)


def test_a_batch_over_the_trace_budget_is_shown_not_traced_rather_than_guessed(console_app, redis_client):
    """Over the budget, the deliveries carry no trace mark and the tail says "not traced" for each destination."""
    state = console_app.extensions["collector"]
    console_app.extensions["collector"] = dataclasses.replace(state, trace_budget=TraceBudget(per_second=1, clock=lambda: 0.0))
    client = console_app.test_client()
    first, second = purchase(), purchase()
    collect(client, first)
    collect(client, second)
    traced = {d["event_ids"][0]: TRACE_FIELD in d for d in queued(redis_client, "commerce")}
    assert traced == {first["id"]: True, second["id"]: False}
    statuses = {event["id"]: event["statuses"] for event in tail_events(client)}
    assert statuses[first["id"]] == {"depict": "queued", "commerce": "queued"}
    assert statuses[second["id"]] == {"depict": "not traced", "commerce": "not traced"}


def test_the_tail_names_where_each_batch_came_from(console):
    """Snippet, Segment (analytics.js), RudderStack (its beacon path) and a server write key each show as their source."""
    snippet = make_event("page_view")
    collect(console, snippet)
    sources = {}
    for source, path, auth, library in (
        ("segment", "/v1/batch", None, "analytics.js"),
        ("rudderstack", "/beacon/v1/batch", None, "RudderLabs JavaScript SDK"),
        ("server", "/v1/batch", SERVER_WRITE_KEY, "analytics-python"),
    ):
        message = make_segment_message(event="Product Viewed", properties={"product_id": PRODUCT})
        message["context"]["library"] = {"name": library, "version": "1.0"}
        headers = {"Origin": ORIGIN, "Content-Type": "text/plain", "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0"}
        body: dict = {"batch": [message]}
        if auth:
            headers["Authorization"] = "Basic " + base64.b64encode(f"{auth}:".encode()).decode()
        else:
            body["writeKey"] = BROWSER_WRITE_KEY
        answer = console.post(path, data=json.dumps(body), headers=headers, query_string={"writeKey": BROWSER_WRITE_KEY} if not auth else {})
        assert answer.status_code == 200, answer.data
        sources[source] = message["messageId"]
    events = tail_events(console)
    by_source = {event["source"] for event in events}
    assert by_source == {"snippet", "segment", "rudderstack", "server"}
    assert [event["source"] for event in events if event["id"] == snippet["id"]] == ["snippet"]


# the event page ------------------------------------------------------------------


def test_the_event_page_shows_each_destinations_request_masked_answer_attempts_and_dead_letter(console, redis_client, runtime):
    """A purchase delivered to Depict and refused 422 by Commerce: its page shows both requests (no API key, no e-mail), both answers, and the dead letter's reason."""
    consumer = {"id": "con_1", "birthDate": "1990-01-01", "email": PERSON, "firstName": "Jane", "lastName": "Doe", "phoneNumber": "5555550199"}
    event = purchase(account={"id": "acc_1", "consumer": consumer})
    collect(console, event)
    work(runtime, redis_client, "depict", Outcome.DELIVERED, 200, answer="{}")
    work(runtime, redis_client, "commerce", Outcome.DEAD, 422, answer=f'{{"message": "name is invalid", "key": "{COMMERCE_KEY}"}}')
    page = console.get(f"/console/events/{event['id']}", query_string={"site": SITE}, headers=BEARER)
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    for secret in (DEPICT_KEY, COMMERCE_KEY, PERSON, "Jane", "5555550199", "1990-01-01"):
        assert secret not in html
    depict = re.search(r'<section class="destination" id="destination-depict".*?</section>', html, re.S).group(0)
    commerce = re.search(r'<section class="destination" id="destination-commerce".*?</section>', html, re.S).group(0)
    assert 'data-status="delivered"' in depict and "HTTP 200" in depict and "42.0 ms" in depict
    assert "X-API-KEY: ***" in depict and "/create-events" in depict and PRODUCT in depict
    assert 'data-status="dead"' in commerce and "HTTP 422" in commerce and "name is invalid" in commerce
    assert "Authorization: Bearer ***" in commerce and "Dead letter" in commerce
    detail = console.get(f"/console/api/events/{event['id']}", headers=BEARER).get_json()
    statuses = {row["destination"]: row["status"] for row in detail["destinations"]}
    assert statuses == {"depict": "delivered", "commerce": "dead"}
    [letter] = next(row for row in detail["destinations"] if row["destination"] == "commerce")["dead_letters"]
    assert letter["reason"] == "HTTP 422" and letter["status"] == 422


def test_every_attempt_is_listed_retry_then_delivered(console, redis_client, runtime):
    """A delivery retried after a 500 then delivered shows both attempts in order, and the tail says delivered."""
    event = make_event("User Login")
    collect(console, event)
    work(runtime, redis_client, "commerce", Outcome.RETRY, 500, answer="upstream down", job_try=1)
    assert tail_events(console, q=event["id"])[0]["statuses"]["commerce"] == "retrying"
    work(runtime, redis_client, "commerce", Outcome.DELIVERED, 200, job_try=2)
    detail = console.get(f"/console/api/events/{event['id']}", headers=BEARER).get_json()
    [commerce] = detail["destinations"]
    assert [(a["try"], a["outcome"], a["status"]) for a in commerce["attempts"]] == [(1, "retry", 500), (2, "delivered", 200)]
    assert tail_events(console, q=event["id"])[0]["statuses"] == {"commerce": "delivered"}


def test_a_429_waited_out_within_its_job_shows_both_tries_at_the_times_they_went(console, redis_client, runtime, commerce):
    """The real sender meets a 429 with Retry-After: 1 and sends again in the job: the event page lists the 429
    and then the 200, each at the time its request went, not at the job's end."""
    event = make_event("User Login")
    collect(console, event)
    commerce.fail_next(1, 429, retry_after=1)
    before = time.time()
    attempts = runtime.send_all("job-429", queued(redis_client, "commerce"), deadline=time.monotonic() + 30)
    record_job(redis_client, JobFigures(SITE, "commerce", traces=attempt_records(runtime, attempts, 1, [])))
    detail = console.get(f"/console/api/events/{event['id']}", headers=BEARER).get_json()
    [sent] = detail["destinations"]
    assert [(a["outcome"], a["status"]) for a in sent["attempts"]] == [("retry", 429), ("delivered", 200)]
    first, second = (a["at"] for a in sent["attempts"])
    assert before <= first and first + 1 <= second <= time.time(), "each try at the time it went, the second after the wait"
    assert tail_events(console, q=event["id"])[0]["statuses"] == {"commerce": "delivered"}


def test_a_dead_letter_outranks_an_older_retry_and_an_untraced_row(console_app, redis_client, runtime):
    """A delivery given up after retries (the job failed as a whole, so no new record) shows dead; so does an untraced one."""
    client = console_app.test_client()
    retried = make_event("User Login")
    collect(client, retried)
    [attempt] = work(runtime, redis_client, "commerce", Outcome.RETRY, 503)
    assert tail_events(client, q=retried["id"])[0]["statuses"] == {"commerce": "retrying"}
    runtime.dead_letters.add([attempt], 5, reason_prefix="gave up after 60 s: ")
    assert tail_events(client, q=retried["id"])[0]["statuses"] == {"commerce": "dead"}
    state = console_app.extensions["collector"]
    console_app.extensions["collector"] = dataclasses.replace(state, trace_budget=TraceBudget(per_second=0))
    untraced = make_event("User Login")
    collect(client, untraced)
    [delivery] = [d for d in queued(redis_client, "commerce") if d["event_ids"] == [untraced["id"]]]
    runtime.dead_letters.add([Attempt(delivery, Outcome.DEAD, status=400)], 1)
    assert tail_events(client, q=untraced["id"])[0]["statuses"] == {"commerce": "dead"}


def test_an_event_no_tail_or_trace_knows_is_a_404_page_and_a_json_404(console):
    """An unknown event id answers the page's 404 (with a pointer to the dead letters) and the API's JSON 404."""
    page = console.get("/console/events/no_such_event_0000", headers=BEARER)
    assert page.status_code == 404 and "Not found" in page.get_data(as_text=True)
    answer = console.get("/console/api/events/no_such_event_0000", headers=BEARER)
    assert answer.status_code == 404 and answer.get_json()["error"]["code"] == 404


def test_masking_hides_keys_anywhere_and_keeps_the_scheme_and_the_rest():
    """Key headers show their scheme only, a key echoed elsewhere is masked, an address keeps its first part, a body loses e-mails."""
    headers = {"Authorization": "Bearer k-123456", "X-API-KEY": "d-654321", "Referer": "https://s.example/?token=abc&x=1", "X-Forwarded-For": "203.0.113.9"}
    shown = masked_headers(headers, ["k-123456", "d-654321"])
    assert shown == {"Authorization": "Bearer ***", "X-API-KEY": "***", "Referer": "https://s.example/?token=***&x=1", "X-Forwarded-For": "203.***"}
    body = masked_body({"account": {"email": PERSON, "phoneNumber": "555"}, "note": f"write to {PERSON}", "id": "k-123456"}, ["k-123456"])
    assert PERSON not in body and "555" not in body and "k-123456" not in body and '"note":"write to ***"' in body


def test_the_trace_is_a_capped_list_per_site(redis_client):
    """However many attempts are recorded, a site keeps the last ATTEMPTS_KEPT, expiring."""
    records = [json.dumps({"delivery": f"d{n}", "destination": "commerce", "event_ids": [f"e{n}"], "outcome": "delivered"}) for n in range(ATTEMPTS_KEPT + 20)]
    record_job(redis_client, JobFigures(SITE, "commerce", traces=records))
    assert redis_client.llen(trace_key(SITE)) == ATTEMPTS_KEPT
    assert 0 < redis_client.ttl(trace_key(SITE)) <= 24 * 3600


# find ------------------------------------------------------------------------------


def test_the_tail_is_filtered_by_type_status_destination_source_and_searched_by_product_and_id(console, redis_client, runtime):
    """Each filter and the search narrow the tail to the events that match, server-side, in the page and the API alike."""
    bought, viewed = purchase(), make_event("page_view")
    collect(console, bought, viewed)
    work(runtime, redis_client, "commerce", Outcome.DEAD, 422)
    assert [e["id"] for e in tail_events(console, type="purchase")] == [bought["id"]]
    assert [e["id"] for e in tail_events(console, q=PRODUCT.lower())] == [bought["id"]]
    assert [e["id"] for e in tail_events(console, q=viewed["id"][:10])] == [viewed["id"]]
    assert {e["id"] for e in tail_events(console, status="dead", destination="commerce")} == {bought["id"], viewed["id"]}
    assert tail_events(console, status="delivered") == []
    assert {e["id"] for e in tail_events(console, status="422")} == {bought["id"], viewed["id"]}
    assert len(tail_events(console, source="snippet")) == 2 and tail_events(console, source="server") == []
    html = console.get("/console/", query_string={"type": "purchase"}, headers=BEARER).get_data(as_text=True)
    tail = re.search(r'<section id="tail".*?</section>', html, re.S).group(0)
    assert bought["id"] in tail and viewed["id"] not in tail
    assert f'href="/console/events/{bought["id"]}?site={SITE}&amp;type=purchase"' in tail


def test_dead_letters_and_refusals_take_the_same_filters(console, redis_client, runtime):
    """``type``, ``q`` and an HTTP ``status`` narrow the dead letters and the refusals; the bulk buttons step aside when they would act on more."""
    bought, login = purchase(), make_event("User Login")
    collect(console, bought, login)
    attempts = work(runtime, redis_client, "commerce", Outcome.DEAD, 422)
    delivery_of = {attempt.delivery["event_ids"][0]: attempt.delivery["id"] for attempt in attempts}
    record_refusal(redis_client, 400, "unknown site 'nope'", None)
    record_refusal(redis_client, 413, "the body is over 64 KiB", SITE)
    letters = console.get("/console/api/dead-letters", query_string={"type": "User Login"}, headers=BEARER).get_json()
    assert [row["id"] for row in letters["dead_letters"]] == [delivery_of[login["id"]]]
    by_event = console.get("/console/api/dead-letters", query_string={"q": bought["id"]}, headers=BEARER).get_json()
    assert [row["id"] for row in by_event["dead_letters"]] == [delivery_of[bought["id"]]]
    assert console.get("/console/api/dead-letters", query_string={"status": "delivered"}, headers=BEARER).get_json()["matching"] == 0
    html = console.get("/console/", query_string={"status": "413"}, headers=BEARER).get_data(as_text=True)
    refusals = re.search(r'<section id="refusals".*?</section>', html, re.S).group(0)
    assert "64 KiB" in refusals and "unknown site" not in refusals
    narrowed = console.get("/console/", query_string={"q": bought["id"]}, headers=BEARER).get_data(as_text=True)
    assert "replay-all" not in narrowed and "act on site, destination and vendor status only" in narrowed


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ({"destination": "mixpanel"}, "destination must be one of depict, commerce"),
        ({"source": "zapier"}, "source must be one of snippet, segment, rudderstack, server"),
        ({"status": "lost"}, "status must be one of queued, delivered, retrying, dead, not traced, or an HTTP status such as 422"),
        ({"range": "30d"}, "range must be one of 1h, 24h, 7d"),
        ({"q": "x" * 201}, "the search is at most 200 characters"),
    ],
)
def test_a_filter_no_panel_could_match_is_a_400_that_says_what_is_allowed(console, query, problem):
    """A bad filter value answers 400 in the JSON error shape with the allowed values, on the page and the API."""
    for path in ("/console/", "/console/api/events", "/console/api/dead-letters"):
        answer = console.get(path, query_string=query, headers=BEARER)
        assert answer.status_code == 400 and answer.get_json()["error"]["message"] == problem


# time ranges ------------------------------------------------------------------------


def test_the_range_chooses_the_charts_span_and_bucket_and_the_tables_time(console, redis_client):
    """``range=1h`` draws minutes of the last hour, ``24h`` and ``7d`` draw hours from the hourly counts; older dead letters leave the 1 h view."""
    now = time.time()
    record_job(redis_client, JobFigures(SITE, "commerce", events_delivered=7), now=now - 3 * 3600)
    record_job(redis_client, JobFigures(SITE, "commerce", events_delivered=2), now=now - 60)
    old = Attempt({"id": "wev_old", "site": SITE, "destination": "commerce", "body": {}, "event_ids": ["e_old"], "headers": {}}, Outcome.DEAD, status=400)
    DeadLetters(redis_client).add([old], 1)
    redis_client.hset("collector:dead-letters", f"{SITE}:commerce:wev_old", json.dumps({**json.loads(redis_client.hget("collector:dead-letters", f"{SITE}:commerce:wev_old")), "failed_at": now - 7200}))

    def chart(range_: str) -> str:
        html = console.get("/console/", query_string={"range": range_}, headers=BEARER).get_data(as_text=True)
        return re.search(rf'<figure class="chart-card" data-site="{SITE}" data-destination="commerce".*?</figure>', html, re.S).group(0)

    hour = chart("1h")
    assert 'data-delivered="2"' in hour and hour.count("<rect") == 1 and 'viewBox="0 0 240 100"' in hour
    day = chart("24h")
    assert 'data-delivered="9"' in day and day.count("<rect") == 2 and 'viewBox="0 0 96 100"' in day
    assert 'viewBox="0 0 672 100"' in chart("7d")
    assert console.get("/console/api/dead-letters", query_string={"range": "1h"}, headers=BEARER).get_json()["matching"] == 0
    assert console.get("/console/api/dead-letters", query_string={"range": "24h"}, headers=BEARER).get_json()["matching"] == 1
    summary = console.get("/console/api/summary", query_string={"range": "24h"}, headers=BEARER).get_json()
    assert summary["events"]["minutes"] == 1440
    assert summary["events"]["by_site_and_destination"] == [{"site": SITE, "destination": "commerce", "delivered": 9, "failed": 0}]
