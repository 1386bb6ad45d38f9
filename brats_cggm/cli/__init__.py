"""Command line entry points (argument parsing and exit codes); the library modules hold the python API."""
