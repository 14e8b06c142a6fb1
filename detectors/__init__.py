"""Online detectors for LLM usage streams. See :mod:`detectors.base` for the contract."""
