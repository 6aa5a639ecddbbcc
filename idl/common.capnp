@0xb3d4c50dfc143b55;
# Wire types shared by every zmesh service: the RPC header, the status codes
# and the event envelope. DESIGN.md §2 and §5.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("zmesh::idl");

enum StatusCode {
  # One list for the whole mesh; mapped to HTTP in exactly one place (gateway).
  ok @0;
  invalidArgument @1;
  failedPrecondition @2;
  unauthenticated @3;
  permissionDenied @4;
  notFound @5;
  alreadyExists @6;
  conflict @7;
  payloadTooLarge @8;
  resourceExhausted @9;
  internal @10;
  unimplemented @11;
  unavailable @12;
  deadlineExceeded @13;
  insufficientStorage @14;
}

annotation readOnly @0xfa0de63414b6164f (method) :Void;
# The method changes nothing: a server runs a resend of it again rather than
# keeping its reply for the retry window (DESIGN.md §3).

struct RpcHeader {
  # Opens the one frame of every request and reply (after the ROUTER
  # envelope); the params or results message follows it in the same frame.
  requestId @0 :UInt64;
  # Chosen by the client, unique per connection; a retry reuses it.
  interfaceId @1 :UInt64;
  # capnp::typeId<Interface>() of the called interface.
  methodId @2 :UInt16;
  # The method's ordinal (@N in the schema).
  budgetMs @3 :UInt32;
  # Time left for the call when it was sent. Relative, because clocks differ
  # between hosts; 0 means "no deadline given" (the server applies its default).
  retryable @4 :Bool;
  # The client may resend this request id; the server keeps its reply for the
  # retry window so a resend is answered, not executed again.
  traceId @5 :Text;
  # The gateway's X-Request-Id, carried into logs.
  idempotencyKey @6 :Text;
  # The caller's key for a state-changing call, where it has one.
  status @7 :StatusCode;
  # Replies only.
  message @8 :Text;
  # Replies only: why the status is not ok.
}

struct Event {
  # Payload of every pub/sub message; the ZeroMQ topic frame precedes it.
  publisher @0 :Text;
  # Who published: service name plus instance, e.g. "idgen@host:7110".
  incarnation @1 :UInt64;
  # Random per process start, so a restarted publisher is never a gap.
  sequence @2 :UInt64;
  # 1, 2, 3 … per (publisher, incarnation, topic).
  wallTimeMs @3 :Int64;
  topic @4 :Text;
  bodyType @5 :UInt64;
  # capnp type id of the struct in `body`, so a reader can decode it by schema.
  body @6 :AnyPointer;
}

struct ServiceState {
  # Body of mesh.service_up / mesh.service_down (from zmeshctl's supervisor).
  service @0 :Text;
  endpoint @1 :Text;
  pid @2 :Int32;
  restarts @3 :UInt32;
  reason @4 :Text;
}
