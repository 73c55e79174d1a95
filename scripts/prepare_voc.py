"""Prepare the voc dataset: `python scripts/prepare_voc.py --raw DIR --out DIR`."""

import sys

from zegclip.data.prepare import main

if __name__ == "__main__":
    sys.exit(main(["voc", *sys.argv[1:]]))
