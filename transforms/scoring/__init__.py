"""Step 2, score (workers): a chunk of records -> encoded rows, dead letters
and counts, with bad records isolated from broken models."""
