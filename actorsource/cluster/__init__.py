"""A cluster of runtimes: one live activation per aggregate, messages routed to its owner."""
