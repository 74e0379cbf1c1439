"""Data layer: sources -> decoded 16 kHz audio (kept on disk) -> screening -> split -> manifests."""
