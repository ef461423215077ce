"""Analysis layer: run records in, honest statistics, tables, figures, reports and a CI gate out.

- `scores`:      per-run scores from the results store under a stated statistic (final, last-k, best)
- `stats`:       reproducible bootstrap statistics (rliable aggregates, probability of improvement)
- `tables`:      Markdown, LaTeX (booktabs) and CSV tables
- `plots`:       matplotlib figures (PNG and PDF)
- `report`:      `build_report`, the library function behind `offbench report`
- `leaderboard`: frozen reference scores, protocols, and the regression check behind `offbench check`
- `commands`:    the typer commands registered by `offbench.cli`

Nothing is imported here: rliable takes seconds to import, and the CLI imports it only when needed.
See docs/analysis.md for the statistics, the regression test and the leaderboard format.
"""
