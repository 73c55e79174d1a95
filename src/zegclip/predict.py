"""``python -m zegclip.predict`` (also ``zegclip predict`` and ``zegclip-predict``).

The code lives in :mod:`zegclip.cli.predict`; this module keeps the command users run.
"""

import sys

from zegclip.cli.predict import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
