"""Durable state: per-partition checkpoints, the notification ledger and shared (cross-replica) stores."""
