"""`python -m miaray.unit`: one unit from the command line (`miaray.unit.cli`)."""

from miaray.unit.cli import main

raise SystemExit(main())
