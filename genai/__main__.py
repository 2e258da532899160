"""``python -m genai``: the CLI, without depending on ``genai`` being on PATH (Ray Jobs)."""

import sys

from genai.cli import main

sys.exit(main())
