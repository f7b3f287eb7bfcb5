"""One module per ``segxai`` sub-command; each defines ``register(subparsers)``."""
