"""`python -m detector` is the same as the `ad-detector` console script."""

from detector.cli import main

raise SystemExit(main())
