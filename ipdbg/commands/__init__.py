"""click subcommands, one module each; cli.py imports them lazily."""
