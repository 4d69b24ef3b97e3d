"""`python -m teamctl`, for when the console script is not on the PATH."""

import sys

from teamctl.cli import main

sys.exit(main())
