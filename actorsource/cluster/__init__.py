"""A cluster of runtimes: one live activation per aggregate, placed by shard leases in the
store, fenced appends, refs routed to the owner (see ``docs/cluster.md``)."""
