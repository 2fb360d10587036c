"""Entry point for `python -m charlm`."""
from charlm.cli import main

main()
