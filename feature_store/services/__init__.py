"""Use cases of the feature store, free of Flask: discovery, serving, extraction."""
