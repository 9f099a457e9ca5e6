"""One module per `spreadcon` subcommand; see `spreadcon.cli`."""
