"""`python -m vilamp`: the same as the `vilamp` command."""

import sys

from .cli import main


sys.exit(main())
