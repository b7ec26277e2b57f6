#!/usr/bin/env python
"""The known-pruning grid (paper section 5.2) as a Ray Tune sweep.

    python sweeps/full_grid.py --preset quick                  # digits, minutes on a CPU
    python sweeps/full_grid.py --preset paper --dry-run        # the 255 pruned target models
    ray submit cluster.yaml sweeps/full_grid.py -- --preset paper --storage s3://BUCKET/miaray --cache /efs/miaray-cache

`ray submit` copies only this file, so the logic lives in the installed package (`miaray.sweep`).
"""

from miaray.sweep import full_grid_main

if __name__ == "__main__":
    raise SystemExit(full_grid_main())
