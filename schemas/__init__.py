"""mxgate's event schemas (Avro), their wire form and the typed events built on them.

:mod:`schemas.wire` holds the schemas and the single-object encoding (Avro dicts, as an outside
consumer sees them); :mod:`schemas.events` one frozen dataclass per record and
:func:`encode_event` / :func:`decode_event`, which are what mxgate's own code uses.
See schemas/README.md.
"""

# Everything public in the two modules, named once there (their __all__), re-exported here.
from schemas import events as _events
from schemas import wire as _wire
from schemas.events import *  # noqa: F403
from schemas.wire import *  # noqa: F403

__all__ = [*_events.__all__, *_wire.__all__]
