"""Sources: where raw usage-event lines come from (files, stdin, Kafka)."""
