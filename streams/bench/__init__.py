"""Measurements behind the project's chosen defaults: `newsflow bench <what>` subcommands."""
