"""The store contract: one suite every ``Store`` implementation passes, on every backend."""
