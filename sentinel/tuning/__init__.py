"""The replay tuning workbench: labels, scoring, threshold sweeps, the HTML report, NAB.

``sentinel tune`` replays labelled history through the same pipeline as the
daemon under several settings of the detectors' parameters, scores the alerts
against the labels (:mod:`sentinel.tuning.scoring`), and recommends per
detector the setting with the best recall under a false-alert budget
(:mod:`sentinel.tuning.sweep`). :mod:`sentinel.tuning.report` renders it all
as one self-contained HTML file; :mod:`sentinel.tuning.nab` scores the generic
seasonal scorer on the Numenta Anomaly Benchmark.
"""
