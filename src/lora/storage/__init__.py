"""Files a run writes: atomic writes, the output folder's lock, the run folder's layout."""
