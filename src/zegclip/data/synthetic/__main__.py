"""``python -m zegclip.data.synthetic``: the command line is :mod:`zegclip.cli.synthetic`."""

if __name__ == "__main__":
    import sys

    from zegclip.cli.synthetic import main

    sys.exit(main())
