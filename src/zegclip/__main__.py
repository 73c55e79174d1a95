"""``python -m zegclip <command> ...``: the same as the ``zegclip`` command."""

import sys

from zegclip.cli.main import main

sys.exit(main())
