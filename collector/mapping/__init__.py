"""Mapping: an inbound event becomes the deliveries that a site's destinations receive.

``routing.py`` decides which destination takes which event and builds the
deliveries; ``depict.py`` and ``commerce.py`` map one event to each vendor's
shape (``commerce_models.py``: Commerce's own schemas; ``present.py``: dump
only the fields an event has).
"""
