@0xe71ffdfcac0f9e84;
# The ID generator: durable sequences (INCR semantics) and Snowflake ids.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("zmesh::idl");
using import "common.capnp".readOnly;

interface IdGen {
  next @0 (namespace :Text, count :UInt32) -> (first :UInt64, count :UInt32);
  # Ids first … first+count-1 of the namespace's sequence; never repeated,
  # never going backwards, even across crashes (gaps allowed).
  # 1 <= count <= 10000; namespace: 1-128 chars of [A-Za-z0-9._:-].

  snowflake @1 (count :UInt32) -> (ids :List(UInt64));
  # Time-ordered 64-bit ids: 41 bits of ms since the epoch, 10 bits worker,
  # 12 bits sequence. 1 <= count <= 10000.

  decode @2 (id :UInt64) -> (timestampMs :Int64, worker :UInt16, sequence :UInt16) $readOnly;
  # timestampMs is Unix time (the epoch added back).
}

struct BlockReserved {
  # Body of idgen.block: the namespace's durable upper bound moved.
  namespace @0 :Text;
  from @1 :UInt64;
  # First id of the new block.
  limit @2 :UInt64;
  # One past the last id the block may issue.
}

struct IdGenLogRecord {
  # One record of the idgen append-only log.
  union {
    reserve :group {
      namespace @0 :Text;
      limit @1 :UInt64;
    }
    timeBound @2 :Int64;
    # Snowflake: no id will be issued with a timestamp below this (Unix ms).
    stopBound @3 :Int64;
    # Written last by a clean stop: the newest id's ms + 1. Replaces the bounds
    # before it (they ran ahead of the clock), so a clean restart need not wait
    # for the clock to pass them.
  }
}

struct IdGenSnapshot {
  namespaces @0 :List(Namespace);
  timeBound @1 :Int64;
  struct Namespace {
    name @0 :Text;
    limit @1 :UInt64;
  }
}
