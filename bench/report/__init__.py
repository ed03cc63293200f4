"""Reports derived from a run's results: tables now; plots, HTML and CI verdicts later."""
