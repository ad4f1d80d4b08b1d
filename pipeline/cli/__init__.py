"""The `moderate` command: argument parsing, printing, exit codes; a thin layer over the library."""
