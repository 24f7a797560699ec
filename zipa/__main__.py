"""``python -m zipa`` is the ``zipa`` command."""

import sys

from zipa.cli import main

sys.exit(main())
