"""Protocol limits of a PutRecords request (v3io Streaming Web API), in one place.

The sink packs requests to these limits and the embedded server enforces the same constants, so
client and server agree byte for byte. "1 MB" means 1,048,576 bytes (2**20), "10 MB" 10,485,760.
"""

from __future__ import annotations

from typing import Final

MAX_RECORDS_PER_REQUEST: Final = 1000
"""Records in one PutRecords request; more fails the whole request."""

MAX_REQUEST_BODY_BYTES: Final = 10 * 2**20
"""Size of a PutRecords JSON body, base64 growth of Data and ClientInfo included."""

MAX_DATA_BYTES: Final = 2**20
"""Size of one record's Data, before base64."""

MAX_PARTITION_KEY_BYTES: Final = 256
"""UTF-8 size of one record's PartitionKey."""

MAX_CLIENT_INFO_BYTES: Final = 16
"""Size of one record's ClientInfo (128 bits), before base64."""

BODY_PREFIX: Final = b'{"Records":['
BODY_SUFFIX: Final = b"]}"
BODY_OVERHEAD: Final = len(BODY_PREFIX) + len(BODY_SUFFIX)
"""Bytes of a PutRecords body around its records."""
