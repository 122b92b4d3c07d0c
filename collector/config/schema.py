"""The site configuration's schema: what the TOML file may say, and the typed settings it becomes.

Frozen dataclasses are what the rest of the collector and the workers read;
the Marshmallow schemas check a parsed document and build them. Unknown keys
are errors: a misspelt ``api_kye`` must not silently drop a destination's
key. Reading the file, ``${NAME}`` substitution and the report of problems
with their lines live in ``loading.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from marshmallow import Schema, ValidationError, fields, post_load, validate, validates_schema

from collector.config import defaults
from collector.inbound.account_fields import ACCOUNT_FIELD_PATHS
from collector.inbound.paths import CollectorPaths, clash_problem, path_problem, snippet_problem, template_problem
from collector.storage.delivery_stats import MINUTES_KEPT

SITE_NAME_PATTERN = rf"^[A-Za-z0-9_-]{{1,{defaults.MAX_SITE_NAME_LENGTH}}}$"
MIN_CONSOLE_TOKEN_CHARS = 16
DEFAULT_CONSOLE_HOURS = 3.0
# A host name (or IPv4 address), or an IPv6 address in brackets; no scheme, port or path.
HOST_NAME_PATTERN = r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]{2,45}\])$"


def host_name(authority: str) -> str:
    """The host name of ``host[:port]``, lower case: ``shop.example`` of ``Shop.example:8443``, ``::1`` of ``[::1]:80``."""
    try:
        return urlsplit("//" + authority).hostname or ""
    except ValueError:  # an unbalanced "[": not a host anyone serves
        return authority.lower()


def origin_host_names(origins: Any) -> frozenset[str]:
    """The host names of ``scheme://host[:port]`` origins."""
    return frozenset(host_name(urlsplit(origin).netloc) for origin in origins)


@dataclass(frozen=True)
class DepictDestination:
    url: str
    api_key: str = field(repr=False)
    tenant: str
    market: str
    events: tuple[str, ...] = defaults.DEFAULT_ROUTES["depict"]


@dataclass(frozen=True)
class CommerceDestination:
    url: str
    api_key: str = field(repr=False)
    auth_scheme: str = defaults.DEFAULT_COMMERCE_AUTH_SCHEME
    events: tuple[str, ...] = defaults.DEFAULT_ROUTES["commerce"]
    account_fields: frozenset[str] = defaults.DEFAULT_ACCOUNT_FIELDS


@dataclass(frozen=True)
class SiteLimits:
    """What one site's browsers may make the collector spend, on top of the per-address request limit."""

    web_events_per_request: int = defaults.DEFAULT_WEB_EVENTS_PER_REQUEST
    events_per_minute: int = defaults.DEFAULT_SITE_EVENTS_PER_MINUTE
    visitor_events_per_minute: int = defaults.DEFAULT_VISITOR_EVENTS_PER_MINUTE
    address_share: float = defaults.DEFAULT_ADDRESS_SHARE  # of events_per_minute that one client address may spend


@dataclass(frozen=True)
class Sources:
    """Segment and RudderStack clients that send to this site (``/v1/...``), by their write keys.

    ``write_keys`` are public (they are in the page), so what they send is
    treated as a browser's; ``server_write_keys`` are secret, accepted only
    as HTTP Basic auth from a shop's backend, which may send other
    visitors' events in one batch and say who they are in ``context``.
    """

    write_keys: tuple[str, ...] = ()
    server_write_keys: tuple[str, ...] = field(default=(), repr=False)
    event_types: Mapping[str, str] = field(default_factory=lambda: dict(defaults.SOURCE_EVENT_TYPES))


@dataclass(frozen=True)
class Site:
    name: str
    origins: tuple[str, ...] = ()
    require_consent: bool = False
    honor_gpc: bool = True
    bots: str = defaults.DEFAULT_BOTS  # "drop": events of known bots are not forwarded (collector/inbound/bots.py)
    limits: SiteLimits = field(default_factory=SiteLimits)
    depict: DepictDestination | None = None
    commerce: CommerceDestination | None = None
    sources: Sources = field(default_factory=Sources)

    @property
    def drops_bots(self) -> bool:
        return self.bots == "drop"


@dataclass(frozen=True)
class CookiePolicy:
    name: str = defaults.DEFAULT_VISITOR_COOKIE
    max_age_days: int = defaults.DEFAULT_VISITOR_COOKIE_DAYS
    domain: str | None = None


@dataclass(frozen=True)
class DeliveryPolicy:
    timeout_seconds: float = defaults.DEFAULT_HTTP_TIMEOUT_SECONDS
    connect_timeout_seconds: float = defaults.DEFAULT_CONNECT_TIMEOUT_SECONDS
    retry_base_seconds: float = defaults.DEFAULT_RETRY_BASE_SECONDS
    retry_max_interval_seconds: float = defaults.DEFAULT_RETRY_MAX_INTERVAL_SECONDS
    retry_for_seconds: float = defaults.DEFAULT_RETRY_FOR_SECONDS
    deliveries_per_job: int = defaults.DEFAULT_DELIVERIES_PER_JOB
    concurrency: int = defaults.DEFAULT_SEND_CONCURRENCY


@dataclass(frozen=True)
class CollectorSettings:
    trusted_proxy_hops: int = 0
    rate_limit: str = defaults.DEFAULT_RATE_LIMIT
    rate_limit_storage: str = defaults.DEFAULT_RATE_LIMIT_STORAGE
    redis_timeout_seconds: float = defaults.DEFAULT_REDIS_TIMEOUT_SECONDS
    dedupe_window_seconds: int = defaults.DEFAULT_DEDUPE_WINDOW_SECONDS
    max_events_per_batch: int = defaults.MAX_EVENTS_PER_BATCH
    cookie: CookiePolicy = field(default_factory=CookiePolicy)
    delivery: DeliveryPolicy = field(default_factory=DeliveryPolicy)
    paths: CollectorPaths = field(default_factory=CollectorPaths)


@dataclass(frozen=True)
class ConsoleSettings:
    """The site owner's console at ``/console/``: on only when ``[console]`` names a token."""

    token: str = field(repr=False)
    hours: float = DEFAULT_CONSOLE_HOURS  # of the events-per-minute chart
    host: str | None = None  # the one host name it answers on; None: any that no site lists in its origins


@dataclass(frozen=True)
class CollectorConfig:
    sites: Mapping[str, Site]
    settings: CollectorSettings = field(default_factory=CollectorSettings)
    source: str = "<memory>"
    console: ConsoleSettings | None = None


def _event_routes() -> fields.List:
    return fields.List(
        fields.String(validate=validate.Length(min=1, max=defaults.MAX_EVENT_NAME_LENGTH)),
        validate=validate.Length(min=1),
    )


_http_url = validate.URL(schemes={"http", "https"}, require_tld=False)


def _api_key() -> fields.String:
    """Sent in an HTTP header, so printable ASCII only: anything else could never be sent."""
    return fields.String(
        required=True,
        validate=validate.Regexp(r"^[\x21-\x7e]+$", error="must be printable ASCII without spaces (it is sent in an HTTP header)"),
    )


class _StrictBoolean(fields.Boolean):
    """``true`` or ``false`` only: marshmallow's Boolean would take ``"yes"``, ``"off"`` or ``1`` and guess."""

    default_error_messages = {"invalid": "must be true or false, without quotes"}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid")
        return value


class DepictSchema(Schema):
    url = fields.String(required=True, validate=_http_url)
    api_key = _api_key()
    tenant = fields.String(required=True, validate=validate.Length(min=1))
    market = fields.String(required=True, validate=validate.Length(min=1))
    events = _event_routes()

    @validates_schema(skip_on_field_errors=False)
    def _only_depict_types(self, data: dict[str, Any], **_: Any) -> None:
        unknown = [name for name in data.get("events", ()) if name not in defaults.DEPICT_EVENT_TYPES]
        if unknown:
            raise ValidationError(
                f"not Depict event types: {', '.join(unknown)}; "
                f"Depict accepts {', '.join(defaults.DEPICT_EVENT_TYPES)}",
                "events",
            )

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> DepictDestination:
        if "events" in data:
            data["events"] = tuple(data["events"])
        return DepictDestination(**data)


class CommerceSchema(Schema):
    url = fields.String(required=True, validate=_http_url)
    api_key = _api_key()
    auth_scheme = fields.String(validate=validate.Regexp(r"^[A-Za-z][A-Za-z0-9 _-]*$"))
    events = _event_routes()
    account_fields = fields.List(
        fields.String(
            validate=validate.OneOf(ACCOUNT_FIELD_PATHS, error="not a field of Commerce's Account: {input}"),
        ),
    )

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> CommerceDestination:
        if "events" in data:
            data["events"] = tuple(data["events"])
        if "account_fields" in data:
            data["account_fields"] = frozenset(data["account_fields"])
        return CommerceDestination(**data)


class LimitsSchema(Schema):
    web_events_per_request = fields.Integer(strict=True, validate=validate.Range(min=0, max=defaults.MAX_EVENTS_PER_BATCH))
    events_per_minute = fields.Integer(strict=True, validate=validate.Range(min=1))
    visitor_events_per_minute = fields.Integer(strict=True, validate=validate.Range(min=1))
    address_share = fields.Float(validate=validate.Range(min=0, max=1, min_inclusive=False))

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> SiteLimits:
        return SiteLimits(**data)


def _write_keys() -> fields.List:
    return fields.List(
        fields.String(
            validate=validate.Regexp(
                r"^[\x21-\x39\x3b-\x7e]{1,200}$",
                error="must be 1-200 printable ASCII characters without spaces or ':' (it is an HTTP Basic auth user)",
            )
        )
    )


class SourcesSchema(Schema):
    write_keys = _write_keys()
    server_write_keys = _write_keys()
    events = fields.Dict(
        keys=fields.String(validate=validate.Length(min=1, max=defaults.MAX_EVENT_NAME_LENGTH)),
        values=fields.String(
            validate=validate.OneOf(
                ("", *defaults.DEPICT_EVENT_TYPES),
                error=f"must be a Depict event type ({', '.join(defaults.DEPICT_EVENT_TYPES)}), "
                'or "" to send the event to Commerce only',
            )
        ),
    )

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> Sources:
        event_types = {**defaults.SOURCE_EVENT_TYPES, **data.get("events", {})}
        return Sources(
            write_keys=tuple(data.get("write_keys", ())),
            server_write_keys=tuple(data.get("server_write_keys", ())),
            event_types={name: kind for name, kind in event_types.items() if kind},
        )


class SiteSchema(Schema):
    origins = fields.List(fields.String(validate=validate.Regexp(r"^https?://[^/]+$", error="must be scheme://host[:port] with no path")))
    require_consent = _StrictBoolean()
    honor_gpc = _StrictBoolean()
    bots = fields.String(validate=validate.OneOf(defaults.BOT_POLICIES, error='must be "drop" or "keep"'))
    limits = fields.Nested(LimitsSchema)
    depict = fields.Nested(DepictSchema)
    commerce = fields.Nested(CommerceSchema)
    sources = fields.Nested(SourcesSchema)


class CookieSchema(Schema):
    name = fields.String(validate=validate.Regexp(r"^[A-Za-z0-9_-]{1,64}$"))
    max_age_days = fields.Integer(strict=True, validate=validate.Range(min=1, max=400))
    domain = fields.String(validate=validate.Length(min=1))

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> CookiePolicy:
        return CookiePolicy(**data)


class DeliverySchema(Schema):
    timeout_seconds = fields.Float(validate=validate.Range(min=0.1, max=120))
    connect_timeout_seconds = fields.Float(validate=validate.Range(min=0.1, max=60))
    retry_base_seconds = fields.Float(validate=validate.Range(min=0.1, max=3600))
    retry_max_interval_seconds = fields.Float(validate=validate.Range(min=1, max=86400))
    retry_for_seconds = fields.Float(validate=validate.Range(min=1, max=7 * 86400))
    deliveries_per_job = fields.Integer(strict=True, validate=validate.Range(min=1, max=defaults.MAX_DELIVERIES_PER_JOB))
    concurrency = fields.Integer(strict=True, validate=validate.Range(min=1, max=defaults.MAX_SEND_CONCURRENCY))

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> DeliveryPolicy:
        return DeliveryPolicy(**data)


def _checked(problem_of: Callable[[str], str | None]) -> Callable[[str], None]:
    """A Marshmallow validator from a function that says what is wrong with a value."""

    def check(value: str) -> None:
        problem = problem_of(value)
        if problem:
            raise ValidationError(problem)

    return check


class PathsSchema(Schema):
    """``[collector.paths]``: the browser-facing paths (collector/inbound/paths.py)."""

    snippet = fields.String(validate=_checked(snippet_problem))
    collect = fields.String(validate=_checked(path_problem))
    site_settings = fields.String(validate=_checked(template_problem))

    @validates_schema(skip_on_field_errors=True)
    def _no_clash(self, data: dict[str, Any], **_: Any) -> None:
        problem = clash_problem(CollectorPaths(**data))
        if problem:
            raise ValidationError(problem)

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> CollectorPaths:
        return CollectorPaths(**data)


class SettingsSchema(Schema):
    trusted_proxy_hops = fields.Integer(strict=True, validate=validate.Range(min=0, max=10))
    rate_limit = fields.String(validate=validate.Length(min=1))
    rate_limit_storage = fields.String(validate=validate.OneOf(("memory", "redis")))
    redis_timeout_seconds = fields.Float(validate=validate.Range(min=0.05, max=30))
    dedupe_window_seconds = fields.Integer(strict=True, validate=validate.Range(min=60))
    max_events_per_batch = fields.Integer(strict=True, validate=validate.Range(min=1, max=defaults.MAX_EVENTS_PER_BATCH))
    cookie = fields.Nested(CookieSchema)
    delivery = fields.Nested(DeliverySchema)
    paths = fields.Nested(PathsSchema)

    @validates_schema(skip_on_field_errors=False)
    def _rate_limit_parses(self, data: dict[str, Any], **_: Any) -> None:
        if "rate_limit" in data:
            from limits import parse_many

            try:
                parse_many(data["rate_limit"])
            except ValueError:
                raise ValidationError('not a rate limit such as "1200 per minute"', "rate_limit") from None

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> CollectorSettings:
        return CollectorSettings(**data)


class ConsoleSchema(Schema):
    token = fields.String(
        required=True,
        validate=[
            validate.Length(min=MIN_CONSOLE_TOKEN_CHARS, error="must be at least {min} characters"),
            validate.Regexp(r"^[\x21-\x7e]*$", error="must be printable ASCII without spaces (it is sent in an HTTP header)"),
        ],
    )
    hours = fields.Float(validate=validate.Range(min=0.25, max=MINUTES_KEPT / 60))
    host = fields.String(
        validate=validate.Regexp(HOST_NAME_PATTERN, error="must be a host name such as console.my-store.example, without scheme, port or path")
    )

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> ConsoleSettings:
        if "host" in data:
            data["host"] = host_name(data["host"])
        return ConsoleSettings(**data)


class ConfigSchema(Schema):
    collector = fields.Nested(SettingsSchema)
    console = fields.Nested(ConsoleSchema)
    sites = fields.Dict(
        keys=fields.String(validate=validate.Regexp(SITE_NAME_PATTERN, error="site names are 1-64 of A-Z a-z 0-9 _ -")),
        values=fields.Nested(SiteSchema),
        required=True,
        validate=validate.Length(min=1, error="define at least one site"),
    )

    @validates_schema(skip_on_field_errors=True)
    def _console_not_on_a_site(self, data: dict[str, Any], **_: Any) -> None:
        """A page of a site's origin could read and drive a console served on that origin's host."""
        console = data.get("console")
        if console is None or console.host is None:
            return
        for site_name, site in data.get("sites", {}).items():
            if console.host in origin_host_names(site.get("origins", ())):
                raise ValidationError(
                    {"host": [f"is a host of site {site_name}'s origins; the console is never served under a site's own origin"]},
                    "console",
                )

    @validates_schema(skip_on_field_errors=True)
    def _write_keys_unique(self, data: dict[str, Any], **_: Any) -> None:
        """A write key selects one site: the same key twice would send a shop's events to the wrong one."""
        owners: dict[str, str] = {}
        for site_name, site in data.get("sites", {}).items():
            sources = site.get("sources")
            if not sources:
                continue
            for kind, keys in (("write_keys", sources.write_keys), ("server_write_keys", sources.server_write_keys)):
                for index, key in enumerate(keys):
                    where = f"sites.{site_name}.sources.{kind}[{index}]"
                    if key in owners:
                        shown = repr(key) if kind == "write_keys" else f"'{key[:4]}…' (a server key, shortened)"
                        message = f"write key {shown} is also listed at {owners[key]}: each key must select one site"
                        raise ValidationError({"sites": {site_name: {"sources": {kind: {index: [message]}}}}})
                    owners[key] = where


def config_keys() -> set[str]:
    """Every key the configuration file may use, at any depth (to suggest the one a typo meant)."""
    return _keys_of(ConfigSchema())


def _keys_of(schema: Schema) -> set[str]:
    keys: set[str] = set()
    for name, declared in schema.fields.items():
        keys.add(declared.data_key or name)
        nested = declared if isinstance(declared, fields.Nested) else getattr(declared, "value_field", None)
        if isinstance(nested, fields.Nested) and isinstance(nested.schema, Schema):
            keys |= _keys_of(nested.schema)
    return keys
