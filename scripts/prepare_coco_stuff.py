"""Prepare the coco_stuff dataset: `python scripts/prepare_coco_stuff.py --raw DIR --out DIR`."""

import sys

from zegclip.data.prepare import main

if __name__ == "__main__":
    sys.exit(main(["coco_stuff", *sys.argv[1:]]))
