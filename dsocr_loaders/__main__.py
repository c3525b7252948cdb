"""python -m dsocr_loaders convert INPUT... -o OUTDIR (same as the `dsocr` console script)."""
import sys

from .apps.cli import main

sys.exit(main())
