@0x8c3abfcc2b7e622e;
# The lock service: leases with fencing tokens, fair FIFO wait queues, shared
# mode and counting semaphores, sessions. API.md "Lock service".
#
# Names: 1-200 chars of [A-Za-z0-9._:@-]; owners: 1-128 printable ASCII.
# Times on the wire are durations in ms (clocks differ between hosts).
# Not granted in time, not the holder, wrong token: CONFLICT (HTTP 409).

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("zmesh::idl");
using import "common.capnp".readOnly;

enum LockMode {
  exclusive @0;
  # One holder (or, for a semaphore, one permit).
  shared @1;
  # Any number of shared holders together, none with an exclusive one.
}

struct Holder {
  owner @0 :Text;
  token @1 :UInt64;
  expiresMs @2 :UInt64;
  # Lease left.
  mode @3 :LockMode;
  session @4 :UInt64;
  # 0: not tied to a session.
}

struct LockInfo {
  name @0 :Text;
  holders @1 :List(Holder);
  # In grant order.
  waiters @2 :UInt32;
  permits @3 :UInt32;
  # 0: a lock (exclusive/shared); N: a semaphore of N permits.
  lastToken @4 :UInt64;
  # The highest token ever issued for this name.
  delayedMs @5 :UInt64;
  # Lock-delay left after an expiry: no grant before it ends.
}

interface Lock {
  acquire @0 (name :Text, owner :Text, ttlMs :UInt64, waitMs :UInt64,
              mode :LockMode = exclusive, permits :UInt32, session :UInt64)
          -> (token :UInt64, expiresMs :UInt64, heldMs :UInt64);
  # Grants when compatible with the holders and nobody waits; else joins the
  # FIFO queue for up to waitMs (capped by the service's max_wait and by the
  # call's deadline), then CONFLICT. An owner that already holds the lock gets
  # its grant back unchanged (a retry across a reconnect); one that already
  # waits keeps its place and the older call is answered CONFLICT.
  # permits > 0: the name is a semaphore of that many permits (each holder
  # takes one); every acquire of a semaphore must name the same count.
  # session != 0: the lease ends with the session (openSession).
  # token: strictly greater than any token ever issued for this name.
  # expiresMs: lease left when answered; heldMs: how long the call was at the
  # service (its wait), so a client that counts from when it sent the call
  # knows the lease ends no sooner than sent + heldMs + expiresMs.

  release @1 (name :Text, owner :Text, token :UInt64) -> ();
  # Only by the holder of that token (else CONFLICT); hands the lock to the
  # head of the queue.

  renew @2 (name :Text, owner :Text, token :UInt64, ttlMs :UInt64) -> (expiresMs :UInt64);
  # Only by the holder of a lease that has not expired (else CONFLICT).

  inspect @3 (name :Text) -> (info :LockInfo) $readOnly;
  # NOT_FOUND when nobody holds it, nobody waits and no lock-delay runs.

  validate @4 (name :Text, token :UInt64) -> (valid :Bool, current :UInt64) $readOnly;
  # For a resource guarding writes: valid when `token` is held now. current:
  # the highest token issued for the name (0 once forgotten: freed names are
  # remembered up to the service's retain_names, oldest forgotten first).

  openSession @5 (timeoutMs :UInt64) -> (session :UInt64, timeoutMs :UInt64);
  # A session ends when no heartbeat comes for timeoutMs (clamped to the
  # service's range, answered back): its leases are released (lock.lost) and
  # its waiters answered CONFLICT.

  heartbeat @6 (session :UInt64) -> (timeoutMs :UInt64);
  # NOT_FOUND once the session ended.

  closeSession @7 (session :UInt64) -> (released :UInt32);
}

struct LockEvent {
  # Body of lock.acquired, lock.released, lock.expired and lock.lost.
  name @0 :Text;
  owner @1 :Text;
  token @2 :UInt64;
  mode @3 :LockMode;
  session @4 :UInt64;
  expiresMs @5 :UInt64;
  # lock.acquired: the lease granted.
}

struct LockLogRecord {
  # One record of the lock service's log. Times are Unix ms, so a restart can
  # give a lease its remaining time.
  union {
    tokens @0 :UInt64;
    # Tokens (and session ids) below this may have been issued: a restart
    # issues from here on. Written ahead, fsynced under every policy.
    grant :group {
      name @1 :Text;
      owner @2 :Text;
      token @3 :UInt64;
      mode @4 :LockMode;
      permits @5 :UInt32;
      session @6 :UInt64;
      expiresAtMs @7 :Int64;
    }
    renew :group {
      token @8 :UInt64;
      expiresAtMs @9 :Int64;
    }
    free @10 :UInt64;
    # The lease of this token ended: released, expired or lost.
    openSession :group {
      id @11 :UInt64;
      timeoutMs @12 :UInt64;
    }
    closeSession @13 :UInt64;
    delay :group {
      # A lease expired or was lost and the name's lock-delay runs: no grant
      # before untilMs, also after a restart.
      name @14 :Text;
      permits @15 :UInt32;
      untilMs @16 :Int64;
    }
  }
}

struct LockSnapshot {
  tokens @0 :UInt64;
  leases @1 :List(Lease);
  sessions @2 :List(Session);
  retained @3 :List(Retained);
  # Freed names and their last token, oldest first; then live names'.
  delays @4 :List(Delay);
  # Lock-delays running.

  struct Lease {
    name @0 :Text;
    owner @1 :Text;
    token @2 :UInt64;
    mode @3 :LockMode;
    permits @4 :UInt32;
    session @5 :UInt64;
    expiresAtMs @6 :Int64;
  }
  struct Session {
    id @0 :UInt64;
    timeoutMs @1 :UInt64;
  }
  struct Retained {
    name @0 :Text;
    lastToken @1 :UInt64;
  }
  struct Delay {
    name @0 :Text;
    permits @1 :UInt32;
    untilMs @2 :Int64;
  }
}
