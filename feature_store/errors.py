"""Failures the services report, mapped to HTTP answers by the API layer only."""


class FeatureStoreError(Exception):
    """Base of the errors a client can be told about (the message is safe to show)."""


class StoreUnavailable(FeatureStoreError):
    """The online store (Redis) is unreachable, refusing, or not answering in time."""


class WarehouseUnavailable(FeatureStoreError):
    """The warehouse is unreachable, failing, or not answering in time."""


class WarehouseDataError(FeatureStoreError):
    """The warehouse answered with a row a feature cannot read (a malformed timestamp, say)."""


class BadRequest(FeatureStoreError):
    """What the client sent cannot be used (a malformed training spine, say): a 400."""


class TooLarge(FeatureStoreError):
    """What the client sent is over a configured limit: a 413."""
