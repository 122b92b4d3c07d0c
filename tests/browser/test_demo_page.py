"""The demo page of ``collector dev`` in headless Chromium.

Most tests use the recording collector, which serves
``collector/demo/page.html`` at ``/demo`` and answers ``/_demo/deliveries``
with whatever the test puts there; the last one runs the real
``collector dev``.
"""

from __future__ import annotations

DEPICT_TYPES = ["page_view", "click", "add_to_cart", "purchase", "element_visible", "ws_click", "recommendations_inserted"]


def test_every_button_sends_its_event_for_the_demo_site(tab, recorder):
    """Each button of the demo page sends its Depict type, and the login button a named Web Event after identify."""
    tab.goto(f"{recorder.base_url}/demo")
    for name in [*DEPICT_TYPES, "login", "flush"]:
        tab.page.click(f"button[data-send='{name}']")
    events = recorder.wait_for(
        lambda: {e["type"] for e in recorder.unique_events()} >= {*DEPICT_TYPES, "User Login"} and recorder.unique_events(),
        what="every button's event",
    )
    assert {p.json["site"] for p in recorder.posts()} == {"demo"}
    login = next(e for e in events if e["type"] == "User Login")
    assert login["user_id"] == "customer-42" and login["account_id"] == "acc_0jk3v58djsi1"
    cart = next(e for e in events if e["type"] == "add_to_cart" and e["props"].get("variant_ids"))
    assert cart["props"] == {"variant_ids": ["KEY-1-black"], "product_id": "KEY-1", "entity_price": "100", "currency": "USD"}
    assert not tab.page_errors and not tab.console_errors
    assert tab.errors() == 0


def test_product_cards_send_click_and_element_visible(tab, recorder):
    """The demo's product cards are tracked automatically: in view, and when clicked."""
    tab.goto(f"{recorder.base_url}/demo")
    tab.page.click("article[data-product-id='MOU-2']")
    tab.call("flush")
    (click,) = recorder.wait_for_events(1, "click")
    assert click["props"] == {"recommendation_id": "rec-demo-1", "click_location": "home_recs_2", "product_id": "MOU-2"}
    visible = recorder.wait_for_events(3, "element_visible")
    assert {e["props"]["product_id"] for e in visible} >= {"KEY-1", "MOU-2", "MON-3"}


def test_consent_toggle_stops_and_resumes_collection(tab, recorder):
    """Unticking the consent box stops sending; ticking it again resumes."""
    tab.goto(f"{recorder.base_url}/demo")
    recorder.wait_for_events(1, "page_view")
    tab.page.uncheck("#consent")
    tab.page.click("button[data-send='purchase']")
    tab.page.click("button[data-send='flush']")
    recorder.assert_quiet(1.2, "purchase")
    tab.page.reload()
    tab.wait_loaded()
    assert tab.page.is_checked("#consent") is False
    tab.page.check("#consent")
    tab.page.click("button[data-send='purchase']")
    tab.page.click("button[data-send='flush']")
    recorder.wait_for_events(1, "purchase")


def test_deliveries_panel_shows_verdicts_and_never_renders_received_html(tab, recorder):
    """The panel shows a green verdict for valid deliveries, red errors otherwise, and received text as text."""
    hostile = '<img src=x onerror="window.pwned=1">'
    recorder.deliveries = [
        {
            "destination": "commerce",
            "received_at": "2025-11-22T17:00:01Z",
            "headers": {"Authorization": "Bearer…"},
            "body": {"name": hostile, "id": "wev_abcdefghijkl"},
            "spec_errors": [f"name: {hostile} is bad"],
        },
        {
            "destination": "depict",
            "received_at": "2025-11-22T17:00:00Z",
            "headers": {"X-API-KEY": "demo-d…"},
            "body": [{"tenant": "demo", "market": "us", "type": "page_view"}],
            "spec_errors": [],
        },
    ]
    tab.goto(f"{recorder.base_url}/demo")
    tab.page.wait_for_selector("#deliveries li")
    items = tab.page.locator("#deliveries > li")
    assert items.count() == 2
    assert "1 spec error" in items.nth(0).inner_text()
    assert hostile in items.nth(0).locator("ul.errors").inner_text()
    assert "valid against the vendor spec" in items.nth(1).inner_text()
    assert "page_view" in items.nth(1).inner_text()
    assert tab.page.locator("#deliveries img").count() == 0
    assert tab.page.evaluate("window.pwned") is None
    # new deliveries appear on the next poll, newest first
    recorder.deliveries.insert(0, {**recorder.deliveries[1], "received_at": "2025-11-22T17:00:02Z"})
    tab.page.wait_for_function("document.querySelectorAll('#deliveries > li').length === 3")
    assert "17:00:02" in items.nth(0).inner_text()


def test_under_collector_dev_a_click_shows_spec_valid_deliveries(tab, dev_demo):
    """With the real `collector dev`, a button's event shows up as green Depict and Commerce deliveries."""
    tab.goto(f"{dev_demo}/")
    tab.page.click("button[data-send='add_to_cart']")
    tab.page.click("button[data-send='login']")
    tab.page.click("button[data-send='flush']")
    tab.page.wait_for_function(
        """() => { const items = [...document.querySelectorAll('#deliveries > li')].map(li => li.innerText);
                   return items.some(t => /depict/i.test(t) && t.includes('add_to_cart'))
                       && items.some(t => /commerce/i.test(t) && t.includes('User Login')) }""",
        timeout=30_000,
    )
    texts = tab.page.locator("#deliveries > li").all_inner_texts()
    assert all("valid against the vendor spec" in t for t in texts), texts
    grouped = next(t for t in texts if "add_to_cart" in t and "User Login" in t)  # one batch: both events, both vendors
    assert "Batch accepted at" in grouped and "depict" in grouped.lower() and "commerce" in grouped.lower(), grouped
    assert tab.page.locator("#deliveries .verdict.bad").count() == 0
    assert tab.errors() == 0 and not tab.page_errors and not tab.console_errors


def test_deliveries_are_grouped_by_the_batch_with_millisecond_times(tab, recorder):
    """Deliveries of one batch stand together under the time the page sent it and its events."""
    batch = {"key": "1764000000.123000", "sent_at": "2025-11-24T16:00:00.123Z", "events": ["add_to_cart", "User Login"]}
    recorder.deliveries = [
        {"destination": "commerce", "received_at": "2025-11-24T16:00:00.231Z", "headers": {}, "body": {"name": "User Login"}, "spec_errors": [], "batch": batch},
        {"destination": "commerce", "received_at": "2025-11-24T16:00:00.229Z", "headers": {}, "body": {"name": "add_to_cart"}, "spec_errors": [], "batch": batch},
        {"destination": "depict", "received_at": "2025-11-24T16:00:00.226Z", "headers": {}, "body": [{"type": "add_to_cart"}], "spec_errors": [], "batch": batch},
    ]
    tab.goto(f"{recorder.base_url}/demo")
    tab.page.wait_for_selector("#deliveries li.batch")
    groups = tab.page.locator("#deliveries > li")
    assert groups.count() == 1
    text = groups.nth(0).inner_text()
    assert "Batch accepted at 2025-11-24 16:00:00.123 UTC" in text and "add_to_cart, User Login" in text
    assert groups.nth(0).locator("ul > li").count() == 3 and "16:00:00.226" in text


def test_the_status_line_says_when_nothing_was_sent(tab, recorder):
    """With consent withdrawn, a button says nothing was sent, not that it was queued."""
    tab.goto(f"{recorder.base_url}/demo")
    tab.page.uncheck("#consent")
    tab.page.click("button[data-send='purchase']")
    status = tab.page.locator("#status").inner_text()
    assert status.startswith("Nothing sent") and "consent" in status
    tab.page.check("#consent")
    tab.page.click("button[data-send='purchase']")
    assert tab.page.locator("#status").inner_text().startswith("Queued purchase")


def test_the_demo_page_fits_a_phone(tab, recorder):
    """At 390 px wide the page does not scroll sideways, deliveries included."""
    recorder.deliveries = [
        {"destination": "depict", "received_at": "2025-11-24T16:00:00.226Z", "headers": {"X-API-KEY": "demo-d…"},
         "body": [{"type": "purchase", "url": "https://my-store.example/" + "a-very-long-path/" * 20}], "spec_errors": []},
    ]  # fmt: skip
    tab.page.set_viewport_size({"width": 390, "height": 844})
    tab.goto(f"{recorder.base_url}/demo")
    tab.page.wait_for_selector("#deliveries li.batch")
    assert tab.page.evaluate("document.documentElement.scrollWidth") <= 390

