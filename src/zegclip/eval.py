"""``python -m zegclip.eval experiment=voc_inductive checkpoint=PATH`` (also ``zegclip eval``).

The code lives in :mod:`zegclip.training.eval`; this module keeps the command users run.
"""

from zegclip.training.eval import evaluate, main

__all__ = ["evaluate", "main"]

if __name__ == "__main__":
    main()
