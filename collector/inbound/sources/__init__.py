"""Events from tracking code a shop already runs: Segment's and RudderStack's clients and server libraries.

``segment.py`` is their shared wire protocol (messages -> our inbound
events), ``rudderstack.py`` what RudderStack does differently, and
``api.py`` the ``/v1/...`` endpoints, which hand the inbound events to the
same path as ``/collect`` (``collector/inbound/intake.py``).
"""
