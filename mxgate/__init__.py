"""mxgate: what every role shares (settings, object store, Kafka helpers, topic catalog, CLI)."""

__version__ = "0.1.0"
