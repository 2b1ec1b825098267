"""bench: leakage-safe benchmarking and AutoML for user-behaviour sequence prediction."""

__version__ = "0.1.0"
