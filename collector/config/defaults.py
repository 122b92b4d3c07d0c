"""Facts and limits defined once: event types, field lists, sizes, timings.

Everything that more than one module needs to agree on lives here, so the
inbound schema, the mappings, the routing and the config validation cannot
drift apart.
"""

from __future__ import annotations

DEPICT_EVENT_TYPES: tuple[str, ...] = (
    "page_view",
    "click",
    "add_to_cart",
    "purchase",
    "element_visible",
    "ws_click",
    "recommendations_inserted",
)

# Fields a page may send in PROPS, named as Depict names them. Each is a
# string in Depict's spec except the two below.
DEPICT_STRING_PROPS: tuple[str, ...] = (
    "product_id",
    "entity_price",
    "currency",
    "recommendation_id",
    "click_location",
    "recommendation_type",
    "search_result_id",
    "product_listing_result_id",
    "attribution_id",
    "ab_test_group",
    "page_url",
)
DEPICT_LIST_PROP = "variant_ids"
DEPICT_MAP_PROP = "entity_identifiers"

DESTINATIONS: tuple[str, ...] = ("depict", "commerce")
ALL_EVENTS = "*"
DEFAULT_ROUTES: dict[str, tuple[str, ...]] = {
    "depict": DEPICT_EVENT_TYPES,
    "commerce": (ALL_EVENTS,),
}

# Limits of what /collect accepts.
MAX_BODY_BYTES = 64 * 1024  # the browsers' keepalive/beacon budget
MAX_EVENTS_PER_BATCH = 50
MAX_SITE_NAME_LENGTH = 64
SNIPPET_BATCH_EVENTS = 10  # the snippet sends at most this many events per request
MAX_STRING_LENGTH = 2048  # URLs and referrers
MAX_SHORT_STRING_LENGTH = 256  # ids, names, prices
MAX_EVENT_NAME_LENGTH = 100
MAX_VARIANT_IDS = 100
EVENT_ID_PATTERN = r"^[A-Za-z0-9_-]{8,64}$"
MAX_SAFE_INTEGER = 2**53 - 1  # the largest integer a browser's JSON carries exactly

# What a site's browsers may spend (per site, [sites.NAME.limits]).
DEFAULT_WEB_EVENTS_PER_REQUEST = SNIPPET_BATCH_EVENTS  # each Web Event is one Commerce API call
DEFAULT_SITE_EVENTS_PER_MINUTE = 60_000
DEFAULT_VISITOR_EVENTS_PER_MINUTE = 600
DEFAULT_ADDRESS_SHARE = 0.1  # of a site's per-minute budget, what one client address (IPv6: its /64) may spend

# What of a Commerce Account a browser may send (dotted paths; an id in place of an object is its ".id").
DEFAULT_ACCOUNT_FIELDS: frozenset[str] = frozenset({"id", "anonymousIds", "consumer.id", "lead.id"})

# Segment and RudderStack clients (``/v1/...``, collector/inbound/sources/).
# Their e-commerce spec's event names -> Depict types; a site's
# [sites.NAME.sources.events] table adds to it or overrides it.
SOURCE_EVENT_TYPES: dict[str, str] = {
    "Product Viewed": "page_view",
    "Product Clicked": "click",
    "Product Added": "add_to_cart",
    "Order Completed": "purchase",
}
# Calls other than track() reach Commerce as Web Events named so; page() is a Depict page_view.
SOURCE_CALL_NAMES: dict[str, str] = {
    "page": "page_view",
    "screen": "Screen Viewed",
    "identify": "Identify",
    "group": "Group",
    "alias": "Alias",
}
MAX_SOURCE_BATCH_BYTES = 500 * 1024  # Segment's HTTP API: 500 KB per batch
MAX_SOURCE_MESSAGE_BYTES = 32 * 1024  # and 32 KB per message
MAX_ORDER_PRODUCTS = 100  # products of one Order Completed; each is one Depict purchase

# What the console masks in what it shows (the live tail's page URLs and props, the refusals' reasons),
# besides the personal fields of a Commerce Account: e-mail addresses anywhere (also as %40), and the values
# of query and fragment parameters whose names look secret or personal (reset?email=...&token=...).
EMAIL_PATTERN = r"[A-Za-z0-9._%+-]+(?:@|%40)[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"
SECRET_PARAMETER_PATTERN = r"token|secret|passw|pwd|pass$|auth|key|session|sid$|sig|code|otp|nonce|jwt|mail|phone|ssn|credential"

# Every Redis key of the collector starts with this.
REDIS_KEY_PREFIX = "collector:"

# Identity.
COMMERCE_ID_PREFIX = "wev_"
COMMERCE_ID_LENGTH = 12
DEFAULT_VISITOR_COOKIE = "_cid"
DEFAULT_VISITOR_COOKIE_DAYS = 395  # the longest lifetime browsers keep (400 days)

# Delivery.
DEFAULT_DEDUPE_WINDOW_SECONDS = 24 * 3600
DEFAULT_HTTP_TIMEOUT_SECONDS = 10.0
DEFAULT_CONNECT_TIMEOUT_SECONDS = 3.0
DEFAULT_RETRY_BASE_SECONDS = 10  # first retry after about this long, doubling each time
DEFAULT_RETRY_MAX_INTERVAL_SECONDS = 1800
DEFAULT_RETRY_FOR_SECONDS = 6 * 3600  # then a delivery is dead-lettered
RETRY_JITTER = 0.2  # +/- this share of each interval, so retries of many jobs spread out
DEFAULT_DELIVERIES_PER_JOB = 5000  # events one RQ job carries: its bookkeeping and its last answers' wait spread over many sends
MAX_DELIVERIES_PER_JOB = 20_000
DEFAULT_SEND_CONCURRENCY = 256  # requests in flight per destination and delivery process, at most
MAX_SEND_CONCURRENCY = 2048
DEFAULT_COMMERCE_AUTH_SCHEME = "Bearer"

# The collector's own protection.
DEFAULT_RATE_LIMIT = "1200 per minute"  # requests per client address (IPv6: per /64)
DEFAULT_RATE_LIMIT_STORAGE = "memory"  # each server process counts its share; "redis" counts in Redis
IPV6_RATE_LIMIT_PREFIX = 64  # one household or phone holds a whole /64
DEFAULT_REDIS_TIMEOUT_SECONDS = 2.0  # the longest /collect waits on a stalled Redis before its 503
RETRY_AFTER_WHEN_UNAVAILABLE_SECONDS = 5
RETRY_AFTER_OVER_REQUEST_BUDGET_SECONDS = 60  # the same request will not fit later either: slow the sender down
CONSOLE_LOGIN_ATTEMPTS = "10 per minute"  # console login form posts per client address, right token or wrong
REFUSAL_LOG_LINES_PER_MINUTE = 60  # per process; the refusals past it are counted in the next line

# Bots (collector/inbound/bots.py): a site drops their events ("drop") or forwards them ("keep").
BOT_POLICIES: tuple[str, ...] = ("drop", "keep")
DEFAULT_BOTS = "drop"
BOT_VERDICTS_REMEMBERED = 4096  # judged User-Agents per process: a shop's visitors repeat a few hundred

# Events answered 2xx but not queued, by reason: the outcome label of collector_events_total, and the console's.
DROP_OUTCOMES: dict[str, str] = {"privacy": "dropped_for_privacy", "bot": "dropped_as_bot"}

# The browser-facing paths ([collector.paths]; collector/inbound/paths.py), renamable when a filter list names one.
DEFAULT_SNIPPET_PATH = "/t.js"
DEFAULT_COLLECT_PATH = "/collect"
DEFAULT_SITE_SETTINGS_PATH = "/sites/{site}/settings.json"
SITE_PLACEHOLDER = "{site}"
# The collector's other URLs, which a renamed path may not take.
FIXED_PATHS: tuple[str, ...] = ("/", "/healthz", "/readyz", "/metrics", "/openapi.json", "/console", "/sourceConfig", "/sourceConfig/")
FIXED_PATH_PREFIXES: tuple[str, ...] = ("/v1/", "/beacon/", "/console/", "/_demo/")

DEFAULT_PORT = 8000
