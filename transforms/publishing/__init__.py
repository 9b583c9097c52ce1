"""Step 4, publish: the output directory's layout, the run registry under
`_staging/`, and the last step that checks the counts and publishes."""
