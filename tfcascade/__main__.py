"""`python -m tfcascade ...` is the `tfcascade` command."""

import sys

from tfcascade.pipeline.cli import main

sys.exit(main())
