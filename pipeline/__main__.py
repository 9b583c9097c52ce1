"""`python -m pipeline ...` is the `tfcascade` command."""

import sys

from pipeline.cli import main

sys.exit(main())
