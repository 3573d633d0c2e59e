"""What every store shares: the contract (:mod:`.contract`), the checks at its door
(:mod:`.checks`), JSON in and out of rows (:mod:`.coding`), the lifecycle (:mod:`.lifecycle`),
the commit watch (:mod:`.watch`), the rules of appending (:mod:`.appends`), the growth meter
(:mod:`.growth`), durable timers (:mod:`.timers`), subject keys (:mod:`.keys`) and a cluster's
tables (:mod:`.cluster`)."""

from .appends import KnownHeads as KnownHeads
from .appends import prior_append as prior_append
from .appends import refused_event_ids as refused_event_ids
from .appends import retry_start as retry_start
from .checks import MAX_VERSION as MAX_VERSION
from .checks import check_append as check_append
from .checks import check_checkpoint as check_checkpoint
from .checks import check_command_ids as check_command_ids
from .checks import check_filters as check_filters
from .checks import check_keep as check_keep
from .checks import check_snapshot as check_snapshot
from .checks import check_stream_id as check_stream_id
from .checks import check_time as check_time
from .checks import matches as matches
from .cluster import ClusterStore as ClusterStore
from .cluster import Fence as Fence
from .cluster import MemberRecord as MemberRecord
from .cluster import ShardLease as ShardLease
from .cluster import check_cluster_name as check_cluster_name
from .coding import check_compress_over as check_compress_over
from .coding import compress_json as compress_json
from .coding import damaged_event as damaged_event
from .coding import decode_json as decode_json
from .coding import encode_json as encode_json
from .coding import encode_rows as encode_rows
from .coding import encode_snapshot_state as encode_snapshot_state
from .coding import event_data as event_data
from .coding import event_data_of as event_data_of
from .coding import snapshot_record as snapshot_record
from .coding import stored_event as stored_event
from .coding import utc_now as utc_now
from .contract import AppendCallback as AppendCallback
from .contract import EventStore as EventStore
from .contract import InlineHook as InlineHook
from .contract import Latest as Latest
from .contract import StoreCapabilities as StoreCapabilities
from .contract import T as T
from .contract import TransactionalStore as TransactionalStore
from .contract import TransactionWork as TransactionWork
from .growth import GrowthMeter as GrowthMeter
from .growth import StorageGrowth as StorageGrowth
from .keys import SubjectKeyStore as SubjectKeyStore
from .keys import check_subject as check_subject
from .lifecycle import StoreLifecycle as StoreLifecycle
from .lifecycle import StoreState as StoreState
from .retention import archive_refusal as archive_refusal
from .retention import before_kept as before_kept
from .retention import check_archive_args as check_archive_args
from .retention import check_delete_args as check_delete_args
from .retention import deletion_refusal as deletion_refusal
from .timers import TimerStore as TimerStore
from .timers import check_claim as check_claim
from .timers import check_timer_append as check_timer_append
from .timers import encode_timer_data as encode_timer_data
from .timers import in_categories as in_categories
from .watch import HeadWatch as HeadWatch
from .watch import poll_for_events as poll_for_events
