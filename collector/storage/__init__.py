"""The collector's state: what lives in Redis (outboxes, dedupe, figures), the embedded server, the rate limit's counts.

``outbox.py`` holds the deliveries that the workers (``worker/``) take out;
``dedupe.py`` the event ids a site already accepted; ``delivery_stats.py``
and ``drop_stats.py`` the per-minute figures the console and ``/metrics``
read; ``rate_limit_storage.py`` the per-process counts of the request rate
limit (Redis's are flask-limiter's own); ``redis_server.py`` the embedded
Redis of ``collector dev`` and the checks of a server's durability.
"""
