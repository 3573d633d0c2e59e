"""A cluster of runtimes: one live activation per aggregate, placed by shard leases in the
store, fenced appends, refs routed to the owner (see ``docs/cluster.md``)."""

from ._config import Cluster as Cluster
from ._node import ClusterNode as ClusterNode
from ._node import ClusterView as ClusterView
from ._placement import Owner as Owner
from ._placement import Placement as Placement
from ._placement import rendezvous as rendezvous
from ._placement import shard_of as shard_of
