"""Alert lifecycle: from findings to versioned alerts, and on to notification."""
