#!/usr/bin/env python
"""Defense hyperparameter search (Optuna, trials on Ray): test accuracy vs the strongest attack, means over
the search seeds, then the front re-run on held-out seeds against held-out attacks.

    python sweeps/defense_search.py --defense ppb                             # quick preset, <= 30 CPU minutes
    python sweeps/defense_search.py --defense ppb,dp,adv --trials 40          # one study over three defenses
    python sweeps/defense_search.py --preset paper --defense dp --trials 40 --gpus-per-trial 0.25
    ray submit cluster.yaml sweeps/defense_search.py -- --preset paper --defense adv --storage /efs/miaray

The same command resumes a killed search. `ray submit` copies only this file, so the logic lives in
the installed package (`miaray.search`; docs/defense_search.md).
"""

from miaray.search import defense_search_main

if __name__ == "__main__":
    raise SystemExit(defense_search_main())
