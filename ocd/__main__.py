"""``python -m ocd``: see ocd/comfy_cli.py."""
import sys

from .comfy_cli import main

sys.exit(main())
