"""``python -m zegclip.train experiment=voc_inductive [key=value ...]`` (also ``zegclip train``).

The code lives in :mod:`zegclip.training.train`; this module keeps the command users run.
"""

from zegclip.training.train import main, train

__all__ = ["main", "train"]

if __name__ == "__main__":
    main()
