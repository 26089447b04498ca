"""CLI subcommands, one module each, each with run(args) -> exit code."""
