"""Pure ThreadSanitizer report handling: parsing, signatures, matching. No I/O here."""
