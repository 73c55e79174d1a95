"""``python -m zegclip.data.prepare``: see :mod:`zegclip.cli.prepare`."""

if __name__ == "__main__":
    import sys

    from zegclip.cli.prepare import main

    sys.exit(main())
