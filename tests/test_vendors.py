"""The vendor stand-ins themselves: they must catch what the real vendors would refuse."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.conftest import COMMERCE_KEY, DEPICT_KEY

VALID_DEPICT = [{"tenant": "t", "market": "us", "type": "page_view", "deduplication_id": "e1", "document_width": "1280"}]
VALID_WEB_EVENT = {"id": "wev_abcdefghijkl", "name": "User Login", "anonymousId": "anon_1"}


def post_depict(depict, body, key=DEPICT_KEY, **kwargs):
    return httpx.post(depict.url, json=body, headers={"X-API-KEY": key}, **kwargs)


def post_commerce(commerce, body, authorization=f"Bearer {COMMERCE_KEY}", **kwargs):
    return httpx.post(commerce.url, json=body, headers={"Authorization": authorization}, **kwargs)


def test_valid_payloads_are_accepted_and_recorded(depict, commerce):
    """Spec-valid requests get 200 and the vendor's success shape."""
    assert post_depict(depict, VALID_DEPICT).status_code == 200
    answer = post_commerce(commerce, VALID_WEB_EVENT)
    assert answer.status_code == 200 and answer.json()["success"] is True
    assert depict.event_ids() == ["e1"] and commerce.event_ids() == ["wev_abcdefghijkl"]


@pytest.mark.parametrize(
    "body, fragment",
    [
        ([{**VALID_DEPICT[0], "colour": "red"}], "Additional properties"),
        ([{**VALID_DEPICT[0], "document_width": 1280}], "document_width"),
        ([{"tenant": "t", "type": "page_view"}], "'market' is a required property"),
    ],
)
def test_depict_refuses_what_its_spec_refuses_with_422(depict, body, fragment):
    """An extra field, a numeric width or a missing market is a 422 with HTTPValidationError detail."""
    answer = post_depict(depict, body)
    assert answer.status_code == 422
    assert fragment in str(answer.json()["detail"])


def test_commerce_refuses_a_missing_name_and_the_spec_example_phone(commerce):
    """No name, or a consumer phone like the spec's own '555-0199', is a 400 ErrorModel."""
    assert post_commerce(commerce, {"id": "wev_x"}).json()["error"]["code"] == 400
    consumer = {"id": "c", "birthDate": "1990-01-01", "phoneNumber": "555-0199", "lastName": "D", "firstName": "J"}
    answer = post_commerce(commerce, {"name": "x", "account": {"id": "a", "consumer": consumer}})
    assert answer.status_code == 400 and answer.json()["success"] is False


def test_wrong_keys_and_schemes_are_401(depict, commerce):
    """A wrong Depict key, a wrong Commerce key, or the right key with another scheme is refused."""
    assert post_depict(depict, VALID_DEPICT, key="nope").status_code == 401
    assert post_commerce(commerce, VALID_WEB_EVENT, authorization="Bearer nope").status_code == 401
    assert post_commerce(commerce, VALID_WEB_EVENT, authorization=f"users API-Key {COMMERCE_KEY}").status_code == 401


def test_scripted_429_carries_retry_after_then_recovers(commerce):
    """fail_next answers the next requests with the given status and Retry-After, then behaves."""
    commerce.fail_next(1, 429, retry_after=7)
    first = post_commerce(commerce, VALID_WEB_EVENT)
    assert first.status_code == 429 and first.headers["Retry-After"] == "7"
    assert post_commerce(commerce, VALID_WEB_EVENT).status_code == 200


def test_a_hang_trips_the_client_timeout_and_stop_stays_quick():
    """hang_next holds the answer past a client's timeout; stop() does not wait for it."""
    from tests.vendors import DepictStandIn

    stand_in = DepictStandIn(DEPICT_KEY).start()
    stand_in.hang_next(1, 30)
    with pytest.raises(httpx.ReadTimeout):
        post_depict(stand_in, VALID_DEPICT, timeout=0.5)
    started = time.monotonic()
    stand_in.stop()
    assert time.monotonic() - started < 2


def test_keep_alive_serves_two_requests_on_one_connection(depict):
    """The pooled client's connection is reused, as with the real vendors."""
    with httpx.Client() as client:
        for _ in range(2):
            assert client.post(depict.url, json=VALID_DEPICT, headers={"X-API-KEY": DEPICT_KEY}).status_code == 200
        assert len(client._transport._pool.connections) == 1


def test_duplicates_are_counted_by_event_id(depict):
    """A resent deduplication_id shows up in duplicates()."""
    post_depict(depict, VALID_DEPICT)
    post_depict(depict, VALID_DEPICT)
    assert depict.duplicates() == ["e1"]
