"""``python -m zegclip.export``: the command line is :mod:`zegclip.cli.export`."""

if __name__ == "__main__":
    import sys

    from zegclip.cli.export import main

    sys.exit(main())
