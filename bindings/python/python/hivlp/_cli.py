"""The `hivlp` console command installed with the wheel: the same code as the Rust binary."""

import sys
from importlib import import_module


def main() -> None:
    # Looked up by name: the stubs describe the public `hivlp`, not its native module.
    native = import_module("hivlp._hivlp")
    sys.exit(native._cli_main(sys.argv))
