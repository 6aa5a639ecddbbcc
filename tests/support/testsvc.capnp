@0x87c0371d044ac400;
# A service that exercises every path of rpc/: immediate, timer-deferred,
# cross-request and helper-thread replies; failures; events.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("zmesh::test");

interface TestService {
  echo @0 (text :Text, pad :Data) -> (text :Text, pad :Data);
  sleep @1 (ms :UInt32) -> (sleptMs :UInt32);
  # Replies from a kj timer.
  park @2 (key :Text) -> (value :Text);
  # Replies when release(key) arrives from any client.
  release @3 (key :Text, value :Text) -> (woken :UInt32);
  onHelper @4 (ms :UInt32) -> (helperThread :Bool);
  # Replies when a helper thread reports back through Server::post.
  fail @5 (code :UInt16, message :Text) -> ();
  crash @6 () -> ();
  # Throws a std::runtime_error: must become INTERNAL, never a dead process.
  bump @7 () -> (calls :UInt64);
  # Counts executions (to prove a resent request id runs once).
  publish @8 (topic :Text, count :UInt32) -> ();
  spin @9 (ms :UInt32) -> ();
  # Busy-waits on the loop thread (to make requests queue up).
}

struct TestEvent {
  n @0 :UInt32;
}
