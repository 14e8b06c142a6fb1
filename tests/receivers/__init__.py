"""Local receivers that implement the real protocols strictly (Splunk HEC, Slack Web API, revoke webhook)."""
