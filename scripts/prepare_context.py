"""Prepare the context dataset: `python scripts/prepare_context.py --raw DIR --out DIR`."""

import sys

from zegclip.data.prepare import main

if __name__ == "__main__":
    sys.exit(main(["context", *sys.argv[1:]]))
