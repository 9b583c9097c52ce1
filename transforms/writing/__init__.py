"""Step 3, write (workers): encoded outputs -> uniquely named staged files."""
