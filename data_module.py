"""icefall layout: recipes and users' scripts import ``from data_module import AsrDataModule``.

The code lives in :mod:`zipa.data.module` (installed with the package); this file only re-exports
it, so that both names are one class (a test checks this).
"""

from zipa.data.module import AsrDataModule, parse_named_dirs

__all__ = ["AsrDataModule", "parse_named_dirs"]
