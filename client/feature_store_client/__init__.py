"""A Python client of the feature store's HTTP API.

    from feature_store_client import FeatureStoreClient

    store = FeatureStoreClient("http://localhost:25000", api_key="...")
    store.value("user_failed_transaction_count", 42)
    store.training_set(spine, feature_set="underwriting_v1")   # a pandas DataFrame

It needs requests only; training sets need pyarrow (and pandas for DataFrames): the `arrow` and
`pandas` extras. Nothing of the server is imported.
"""

from feature_store_client.client import FeatureStoreClient, FeatureStoreWarning, __version__
from feature_store_client.errors import (
    BadRequest,
    ExtractionFailed,
    ExtractionTimeout,
    FeatureStoreError,
    Forbidden,
    IncompleteResponse,
    NotFound,
    RequestTimeout,
    ServerError,
    TooLarge,
    Unauthorized,
    Unavailable,
)
from feature_store_client.models import Feature, FeatureSet, Run, Value

__all__ = [
    "BadRequest",
    "ExtractionFailed",
    "ExtractionTimeout",
    "Feature",
    "FeatureSet",
    "FeatureStoreClient",
    "FeatureStoreError",
    "FeatureStoreWarning",
    "Forbidden",
    "IncompleteResponse",
    "NotFound",
    "RequestTimeout",
    "Run",
    "ServerError",
    "TooLarge",
    "Unauthorized",
    "Unavailable",
    "Value",
    "__version__",
]
