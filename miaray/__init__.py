"""miaray: membership inference attacks and defenses on pruned neural networks."""

__version__ = "0.1.0"
