"""Step 1, read (workers): input files -> chunks of records with provenance."""
