"""The `tfcascade` exit codes, one definition for the CLI and the commands."""

OK = 0
FAILED = 1  # the run failed, or records did not add up; nothing published
REFUSED = 2  # refused before any data was read (config, inputs, checkpoints, output)
