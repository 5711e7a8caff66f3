"""One module per vertical: each declares its data, its defaults and its baselines."""
