"""Configuration: YAML file or command-line flags -> validated, frozen `Config`.

    from fastgw.config import load, ConfigError
    try:
        config = load("gateway.yaml")
    except ConfigError as error:
        print(error)          # one `{file}: {keypath}: {problem} ({hint})` per line
"""
from fastgw.config.errors import ConfigError
from fastgw.config.loader import from_command_line, from_document, load, with_workers
from fastgw.config.model import Config

__all__ = ["Config", "ConfigError", "from_command_line", "from_document", "load", "with_workers"]
