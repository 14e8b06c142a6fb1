"""sentinel: streaming security and FinOps alerting on LLM API usage."""

__version__ = "0.1.0"
