"""One module per registered detector: ``firing_stream()`` (events that make it fire)
and optionally ``context()`` (a DetectorContext with the budgets/tenants it needs).

The contract suite in ``tests/contract/test_detector_contract.py`` imports
``tests.contract.streams.<detector name>`` for every registered detector and
fails if it is missing.
"""
