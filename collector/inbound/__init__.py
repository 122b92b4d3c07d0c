"""Taking events in: the first room of an event's path.

The snippet's ``/collect`` (``collect.py``) and the Segment and RudderStack
clients' ``/v1/...`` (``sources/``) read a request (``request_body.py``),
check its events against the inbound schema (``schema.py``,
``event_check.py``, ``account_fields.py``), take the request's facts
(``enrich.py``), drop known bots' events (``bots.py``) and spend the
site's budgets (``intake.py``), which hands the batch to mapping and
storage. ``snippet.py``, ``paths.py`` and ``openapi.py`` serve what the
browser reads before it sends: the snippet, its paths, the schema.
"""
