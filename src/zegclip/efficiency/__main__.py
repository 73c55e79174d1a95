"""``python -m zegclip.efficiency``: the command line is :mod:`zegclip.cli.efficiency`."""

if __name__ == "__main__":
    import sys

    from zegclip.cli.efficiency import main

    sys.exit(main())
