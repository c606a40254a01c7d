"""repro: reproduce, measure and bisect free-threading data races found by ThreadSanitizer."""

__version__ = "0.1.0"
