"""Command-line tools: argument parsing and exit codes; the work is done by the library."""
