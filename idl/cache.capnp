@0xc6f1e2a7d94b3e15;
# The cache: binary-safe keys and values with TTL, eviction under a memory
# limit, an append-only log + snapshot. API.md "Cache".
#
# Keys: 1..max_key_bytes bytes, any bytes; values: 0..max_value_bytes bytes.
# Over either limit: PAYLOAD_TOO_LARGE (an empty key: INVALID_ARGUMENT), for
# reads as for writes. Times on the wire are durations in ms.
# A write refused under the `noeviction` policy: INSUFFICIENT_STORAGE (507).

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("zmesh::idl");
using Json = import "/capnp/compat/json.capnp";
using import "common.capnp".readOnly;

enum SetCondition {
  always @0;
  ifAbsent @1;
  # NX: only when the key is absent.
  ifPresent @2;
  # XX: only when the key is present.
}

struct CacheEntry {
  found @0 :Bool;
  value @1 :Data;
}

struct KeyValue {
  key @0 :Data;
  value @1 :Data;
}

struct CacheStats {
  policy @0 :Text;
  # fifo | lifo | lru | mru | lfu | random | noeviction
  keys @1 :UInt64;
  memoryUsed @2 :UInt64;
  # Bytes the entries and the index really take, allocator rounding included.
  memoryLimit @3 :UInt64;
  hits @4 :UInt64;
  misses @5 :UInt64;
  evictions @6 :UInt64;
  expired @7 :UInt64;
  # Keys removed because their TTL ran out (lazily or by the active sweep).
  refusedFull @8 :UInt64;
  # Writes refused with INSUFFICIENT_STORAGE (noeviction).
  persistenceLagRecords @9 :UInt64;
  # Log records appended but not yet as durable as the fsync policy says.
  fsync @10 :Text;
  # always | everysec | no | off (nothing persisted)
}

interface Cache {
  get @0 (key :Data) -> (found :Bool, value :Data) $readOnly;
  # A miss is found = false, not an error. (Read-only for a resend: it runs
  # again rather than keep a value for the retry window; the use it counts
  # for LRU/LFU is harmless twice.)

  set @1 (key :Data, value :Data, ttlMs :UInt64, condition :SetCondition = always,
          keepTtl :Bool) -> (stored :Bool);
  # ttlMs 0: no expiry (unless keepTtl keeps the key's current one). stored is
  # false when the condition did not hold; nothing changed then.

  del @2 (key :Data) -> (existed :Bool);

  mget @3 (keys :List(Data)) -> (entries :List(CacheEntry)) $readOnly;
  # In the order asked; at most max_batch keys.

  mset @4 (entries :List(KeyValue), ttlMs :UInt64) -> ();
  # Every entry is checked before any is written; at most max_batch entries.

  incr @5 (key :Data, by :Int64 = 1) -> (value :Int64);
  # An absent key counts from 0 (and gets no TTL); a present one keeps its TTL.
  # FAILED_PRECONDITION when the value is not a decimal 64-bit integer or the
  # result would overflow. decr is incr with a negative `by`.

  expire @6 (key :Data, ttlMs :UInt64) -> (found :Bool);
  # ttlMs 0 removes the key's expiry (it persists).

  ttl @7 (key :Data) -> (found :Bool, ttlMs :Int64) $readOnly;
  # ttlMs -1: the key has no expiry.

  exists @8 (key :Data) -> (found :Bool) $readOnly;
  # Unlike get, does not count as a use for LRU/MRU/LFU.

  scan @9 (prefix :Data, cursor :Text, count :UInt32 = 100) -> (keys :List(Data), cursor :Text) $readOnly;
  # Keys starting with prefix, in the order of their 64-bit hash; each call
  # examines about count keys (at least 1; more than max_batch is cut to it),
  # so an answer may hold fewer keys, even none, with the scan not yet
  # complete. Start with cursor ""; the scan is
  # complete when the answer's cursor is "". A key present for the whole
  # scan is returned at least once, whatever is written meanwhile; one added
  # or removed meanwhile may or may not be. A cursor this service did not
  # hand out is INVALID_ARGUMENT.

  stats @10 () -> (stats :CacheStats) $readOnly;
}

enum ChangeReason {
  set @0;
  # cache.set
  deleted @1;
  expired @2;
  overwritten @3;
  # cache.invalidated
  evicted @4;
  # cache.evicted
}

struct CacheEvent {
  # Body of cache.set, cache.invalidated and cache.evicted.
  key @0 :Data $Json.base64;
  # The key, or empty when it is longer than the service's event_key_bytes.
  # In JSON (Server-Sent Events, zmeshctl events): base64.
  keyHash @1 :UInt64;
  # xxh3-64 of the key, always set.
  reason @2 :ChangeReason;
  count @3 :UInt32;
  # 1 for an event of its own. Under load events of a topic beyond the
  # service's events_per_second are folded: the next one published carries
  # how many it stands for (itself included) and is the latest of them.
}

struct CacheLogRecord {
  # One record of the cache's log. Every record is a key's whole state (an
  # incr is logged as the value it produced, an expire as the value with its
  # new expiry), so a snapshot taken while writes go on, followed by the log
  # since the snapshot began, replays to the right state, and a record whose
  # expiry has passed when it is replayed can be dropped at once. Expiry
  # times are Unix ms: a key does not live longer for a restart.
  union {
    set :group {
      key @0 :Data;
      value @1 :Data;
      expiresAtMs @2 :Int64;
      # 0: no expiry.
    }
    del @3 :Data;
    # Deleted, evicted (policy victims are logged, so a restart holds what
    # the running cache held).
    batch @4 :List(CacheLogRecord);
    # What one call changed together (an mset and the evictions it made
    # room with), applied in order: a crash keeps all of it or none. Its
    # records are sets and dels, never batches.
  }
}
