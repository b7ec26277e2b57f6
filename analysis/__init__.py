"""Scripts and helpers that turn experiment directories into the paper's figures, tables and a report.

    python analysis/figures.py RESULTS [RESULTS ...] --out DIR
    python analysis/report.py RESULTS [RESULTS ...] --out report.html

They only read what the units wrote (`rows/`, `signals/`, `roc/`); nothing here trains or attacks.
"""
