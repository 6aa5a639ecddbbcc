@0xb382c788f5c233d8;
# Operations interface implemented by every zmesh process.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("zmesh::idl");
using import "common.capnp".readOnly;

struct MetricFamily {
  # One statistic, declared where it lives, with every labelled series of it.
  # Its Prometheus name is "zmesh_" + name with '.' as '_', and "_total"
  # appended for a counter: "rpc.server.calls" → zmesh_rpc_server_calls_total.
  name @0 :Text;       # "<area>.<what>", [a-z0-9_.], e.g. "cache.hits"
  kind @1 :Kind;
  help @2 :Text;       # one line: what it counts, in which unit
  labelNames @3 :List(Text);
  bounds @4 :List(Float64);  # histogram: bucket upper bounds, ascending; +Inf implied
  samples @5 :List(Sample);

  enum Kind {
    counter @0;    # only goes up (restarts at 0 with the process)
    gauge @1;      # a level now
    histogram @2;  # observations in buckets
  }

  struct Sample {
    labelValues @0 :List(Text);  # one per labelNames entry, same order
    value @1 :Float64;           # counter or gauge; a histogram's count
    buckets @2 :List(UInt64);    # histogram: cumulative counts, one per bound
    sum @3 :Float64;             # histogram: sum of the observations
  }
}

struct Counter {
  # Admin.stats' results before typed families; no longer written.
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

  stats @1 () -> (counters :List(Counter), families :List(MetricFamily)) $readOnly;
  # Every statistic of the process, typed. Label values come from closed sets
  # or are capped per family (the rest fold into the value "_other").
  # counters: retired, always empty (a reader of the old shape sees no
  # statistics rather than misreading the new ones).

  info @2 () -> (service :Text, version :Text, pid :Int32, uptimeMs :UInt64,
                 config :List(Setting)) $readOnly;
}
