#!/usr/bin/env python
"""Unknown pruning (paper section 5.2.5): the target x shadow sparsity matrix (Fig. 12/13) and random
(target method/sparsity, shadow method/sparsity) pairs with the attack accuracy loss (Table 1).

    python sweeps/unknown_pruning.py --preset quick
    python sweeps/unknown_pruning.py --preset paper --study method --dry-run

Models already trained by `full_grid.py` into the same store (`--storage`/`--cache`) are reused.
`ray submit` copies only this file, so the logic lives in the installed package (`miaray.sweep`).
"""

from miaray.sweep import unknown_pruning_main

if __name__ == "__main__":
    raise SystemExit(unknown_pruning_main())
