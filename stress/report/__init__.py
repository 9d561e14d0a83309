"""Run-folder files -> figures and pages. Nothing here loads a model or imports Ray.

build.py renders a run or sweep folder; blocks.py holds the page blocks and their HTML and
Markdown renderers; figures.py names every figure file and draws a run's figures (plots.py);
statements.py, observations.py and robustness_observations.py generate the sentences;
run_report.py and sweep_report.py compose the sections; sweep_figures.py draws a sweep's figures.
"""
