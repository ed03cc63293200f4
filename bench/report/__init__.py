"""Reports derived from a run's results: statistics, tables, plots, the HTML page, the CI
comparison of two runs and the papers' published numbers beside ours."""
