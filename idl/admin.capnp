@0xb382c788f5c233d8;
# Operations interface implemented by every zmesh process.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("zmesh::idl");
using import "common.capnp".readOnly;

struct Counter {
  name @0 :Text;
  value @1 :Int64;
}

struct Setting {
  key @0 :Text;
  value @1 :Text;
}

interface Admin {
  health @0 () -> (ok :Bool, detail :Text) $readOnly;
  # ok=false means the process runs but cannot serve (e.g. storage failed).

  stats @1 () -> (counters :List(Counter)) $readOnly;
  # Monotonic counters and gauges, named "<area>.<what>".

  info @2 () -> (service :Text, version :Text, pid :Int32, uptimeMs :UInt64,
                 config :List(Setting)) $readOnly;
}
