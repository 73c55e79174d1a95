"""``python -m zegclip.demo`` (also ``zegclip demo``): the web demo (needs the ``demo`` extra).

The code lives in :mod:`zegclip.cli.demo`; this module keeps the command users run.
"""

import sys

from zegclip.cli.demo import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
