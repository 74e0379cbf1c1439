"""Data layer: sources -> decoded 16 kHz audio -> screening -> speaker-disjoint split -> manifests."""
