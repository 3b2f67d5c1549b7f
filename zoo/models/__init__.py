"""Model families: pure linen modules, each with a config dataclass."""
