"""python -m zipa.cli: the zipa command."""

import sys

from zipa.cli import main

sys.exit(main())
