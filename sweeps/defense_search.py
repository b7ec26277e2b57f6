#!/usr/bin/env python
"""Defense hyperparameter search (Optuna, trials on Ray): test accuracy vs the strongest attack.

    python sweeps/defense_search.py --defense ppb --trials 16                # quick preset, CPU minutes
    python sweeps/defense_search.py --preset paper --defense dp --trials 40 --gpus-per-trial 0.25
    ray submit cluster.yaml sweeps/defense_search.py -- --preset paper --defense adv --storage /efs/miaray

The same command resumes a killed search. `ray submit` copies only this file, so the logic lives in
the installed package (`miaray.search`).
"""

from miaray.search import defense_search_main

if __name__ == "__main__":
    raise SystemExit(defense_search_main())
