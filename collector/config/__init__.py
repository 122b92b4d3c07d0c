"""The configuration: the TOML file's schema (``schema.py``), its loading (``loading.py``, ``lines.py``) and the defaults of every setting and limit (``defaults.py``).

Nothing is imported here, so that ``collector.config.defaults``, which every
room of the collector and the workers read, comes without the schema.
"""
