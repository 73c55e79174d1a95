"""Class vocabularies: a dataset name, a file or a string -> one list of synonyms per class.

Plain text handling (no model): `zegclip.segment`, ``zegclip predict`` and the ``folder``
dataset kind (``classes.txt``) all read class lists here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from zegclip.data.classes import DATASETS
from zegclip.errors import ZegCLIPError

Vocabulary = list[list[str]]
"""One list of synonyms per class; the first name is the class's display name."""


class VocabularyError(ZegCLIPError, ValueError):
    """A class list that cannot be used (empty, duplicated names, unknown seen names)."""


def _split_names(text: str, sep: str) -> list[str]:
    return [" ".join(part.split()) for part in text.split(sep) if part.strip()]


def _check_vocabulary(vocabulary: Vocabulary, source: str) -> Vocabulary:
    vocabulary = [names for names in vocabulary if names]
    if not vocabulary:
        raise VocabularyError(f"the vocabulary {source} is empty: give at least one class name")
    seen: dict[str, int] = {}
    duplicates = []
    for names in vocabulary:
        for name in names:
            key = name.lower()  # CLIP's tokenizer lower-cases, so 'Cat' and 'cat' are one prompt
            if key in seen and name not in duplicates:
                duplicates.append(name)
            seen[key] = 1
    if duplicates:
        raise VocabularyError(f"duplicate class names in the vocabulary {source}: {', '.join(duplicates)}")
    return vocabulary


def _looks_like_path(spec: str) -> bool:
    return os.sep in spec or "/" in spec or spec.lower().endswith((".txt", ".csv", ".names"))


def parse_vocabulary(spec: str | os.PathLike | Sequence[str | Sequence[str]]) -> Vocabulary:
    """Turn a class specification into one list of synonyms per class.

    Args:
        spec: one of
            - a dataset name (``"voc"``, ``"coco_stuff"``, ``"context"``): its classes;
            - a path to a text file: one class per line, synonyms separated by commas,
              blank lines and ``#`` comments ignored;
            - a string ``"cat; grass, lawn; sky"``: ``;`` separates classes, ``,`` synonyms;
            - a list of names, or of lists of synonyms.

    Raises:
        VocabularyError: the vocabulary is empty, repeats a name, or the file is missing.
    """
    if isinstance(spec, os.PathLike) or (isinstance(spec, str) and os.path.isfile(spec)):
        path = Path(spec)
        try:
            lines = path.read_text(encoding="utf-8-sig").splitlines()  # -sig: a Windows editor's BOM dropped
        except (OSError, UnicodeDecodeError) as err:
            raise VocabularyError(f"cannot read the vocabulary file {path}: {err}") from err
        lines = [line.split("#", 1)[0] for line in lines]
        return _check_vocabulary([_split_names(line, ",") for line in lines], f"in {path}")
    if isinstance(spec, str):
        text = spec.strip()
        if text in DATASETS:
            return _check_vocabulary([[name] for name in DATASETS[text].class_names], f"of dataset {text!r}")
        if _looks_like_path(text) and ";" not in text and "," not in text:
            raise VocabularyError(f"vocabulary file not found: {text}")
        return _check_vocabulary([_split_names(part, ",") for part in text.split(";")], repr(spec))
    vocabulary = []
    for entry in spec:
        names = _split_names(entry, ",") if isinstance(entry, str) else [n for e in entry for n in _split_names(e, ",")]
        vocabulary.append(names)
    return _check_vocabulary(vocabulary, "given")


def seen_mask(vocabulary: Vocabulary, seen: Sequence[str] | None) -> list[bool] | None:
    """C booleans marking the classes named in ``seen`` (any synonym matches), or None.

    Raises:
        VocabularyError: a seen name is not in the vocabulary (the message names them).
    """
    if seen is None:
        return None
    index = {name.lower(): c for c, names in enumerate(vocabulary) for name in names}
    wanted = [" ".join(name.split()) for name in seen if name.strip()]
    unknown = [name for name in wanted if name.lower() not in index]
    if unknown:
        raise VocabularyError(f"seen classes not in the vocabulary: {', '.join(unknown)}")
    marked = {index[name.lower()] for name in wanted}
    return [c in marked for c in range(len(vocabulary))]


def seen_names(spec: str | None, vocabulary: Vocabulary) -> list[str] | None:
    """The seen classes of ``--seen``: names separated by ``;`` or ``,``, or a dataset name (its seen classes).

    Raises:
        VocabularyError: a name is not in ``vocabulary``.
    """
    if spec is None:
        return None
    if spec.strip() in DATASETS:
        info = DATASETS[spec.strip()]
        names = [info.class_names[i] for i in info.seen_ids]
    else:
        names = [n.strip() for n in spec.replace(";", ",").split(",") if n.strip()]
    seen_mask(vocabulary, names)  # raises for names outside the vocabulary
    return names
