@0xbf7e27b89125cd34;
# The rate limiter: rules keyed on descriptors, six algorithms, leases for the
# two-stage (local + global) client. API.md "Rate limiter".

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("zmesh::idl");
using import "common.capnp".readOnly;

struct Descriptor {
  # One part of what a limit is keyed on, e.g. tenant=acme.
  key @0 :Text;
  value @1 :Text;
}

struct Check {
  # One check of checkBatch; the fields as RateLimit.check's.
  rule @0 :Text;
  key @1 :Text;
  descriptors @2 :List(Descriptor);
  cost @3 :UInt32 = 1;
}

struct Decision {
  allowed @0 :Bool;
  # Shadow rules always allow; `shadowDenied` says what they would have done.
  limit @1 :UInt64;
  # Most a key may take at once (its capacity), as RateLimit-Policy states it.
  remaining @2 :UInt64;
  resetMs @3 :UInt64;
  # Until the key is back to its full quota.
  retryAfterMs @4 :UInt64;
  # Denied: until the same cost would pass. 0 when allowed or impossible.
  rule @5 :Text;
  windowMs @6 :UInt64;
  # The rule's window (RateLimit-Policy's w).
  shadowDenied @7 :Bool;
  reason @8 :Text;
  # Why denied when waiting cannot help (cost above the capacity); else empty.
  untracked @9 :Bool;
  # The service tracks no more keys (max_keys) and admits this one untracked.
  refused @10 :Bool;
  # Denied because the service tracks max_keys keys and none is idle: its
  # capacity, not the key's quota (retryAfterMs says when to try again).
}

struct Override {
  descriptors @0 :List(Descriptor);
  # The descriptors it applies to; a subset of the rule's (the most specific wins).
  limit @1 :UInt64;
  burst @2 :UInt64;
  # 0: the rule's burst scaled with the limit.
}

struct RuleInfo {
  name @0 :Text;
  algorithm @1 :Text;
  limit @2 :UInt64;
  windowMs @3 :UInt64;
  burst @4 :UInt64;
  descriptors @5 :List(Text);
  shadowMode @6 :Bool;
  overrides @7 :List(Override);
  # From the rules file.
  runtimeOverrides @8 :List(Override);
  # Set at run time (persisted); one for the same descriptors wins.
}

interface RateLimit {
  check @0 (rule :Text, key :Text, descriptors :List(Descriptor), cost :UInt32 = 1)
        -> (decision :Decision);
  # Takes `cost` from the limit `rule` computes for these descriptors. `key`:
  # for a rule keyed on one descriptor, its value (instead of `descriptors`).
  # cost 0 reads the limit without taking anything.

  checkBatch @1 (checks :List(Check)) -> (decisions :List(Decision));
  # Each check decided in order, as if sent one by one (at most 1000).

  rules @2 () -> (rules :List(RuleInfo)) $readOnly;

  override @3 (rule :Text, descriptors :List(Descriptor), limit :UInt64, burst :UInt64) -> ();
  # Sets the run-time override for exactly these descriptors (a subset of the
  # rule's), replacing one set before; durable before the reply. burst 0: the
  # rule's burst scaled with the limit. Keys it covers keep their state.

  clearOverride @4 (rule :Text, descriptors :List(Descriptor)) -> (removed :Bool);

  reload @5 () -> (rules :UInt32, kept :UInt32);
  # Re-reads the rules from the mesh file (as SIGHUP does): unchanged rules
  # keep their state; a bad file fails with its line and reason and the rules
  # in force stay.

  lease @6 (rule :Text, key :Text, descriptors :List(Descriptor), want :UInt32, ttlMs :UInt32)
        -> (granted :UInt32, ttlMs :UInt32, decision :Decision);
  # Two-stage limiting: takes up to `want` (what is available, maybe 0) for a
  # local stage to admit on its own until the lease ends (ttlMs, cut to the
  # service's lease_max and to the rule's window).
}

struct Denied {
  # Body of ratelimit.denied: coalesced per (rule, key) and interval.
  rule @0 :Text;
  key @1 :Text;
  # The descriptor values joined as the limiter keys them.
  denials @2 :UInt64;
  # Denials of this key since its previous event.
  shadow @3 :Bool;
  retryAfterMs @4 :UInt64;
}

struct RateLimitLogRecord {
  # One record of the rate limiter's log: run-time overrides only (limiter
  # state lives in memory, as Redis's does without persistence).
  union {
    set :group {
      rule @0 :Text;
      override @1 :Override;
    }
    clear :group {
      rule @2 :Text;
      descriptors @3 :List(Descriptor);
    }
  }
}

struct RateLimitSnapshot {
  overrides @0 :List(RuleOverride);
  struct RuleOverride {
    rule @0 :Text;
    override @1 :Override;
  }
}
