"""``python -m zegclip.data.verify``: the command line is :mod:`zegclip.cli.verify`."""

if __name__ == "__main__":
    import sys

    from zegclip.cli.verify import main

    sys.exit(main())
