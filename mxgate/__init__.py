"""mxgate's core: what every role shares (settings, tenants, Kafka helpers, object store,
topic catalog, DNS resolver). It imports only ``schemas``, never a role."""

__version__ = "0.1.0"
