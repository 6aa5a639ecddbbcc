@0xfa42357fe14417dc;
# Every shape of field rpc::checkFields reads or skips, for the tests that
# hold its compiled plans to the Dynamic API's verdicts (the service schemas
# have no lists of lists, no nested unions, no defaults, no capabilities).

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("zmesh::test");

enum Color {
  red @0;
  green @1;
}

interface Probe {
  ping @0 () -> ();
}

struct Leaf {
  name @0 :Text;
  blob @1 :Data;
  n @2 :UInt32;
}

struct Shapes {
  text @0 :Text;
  data @1 :Data;
  leaf @2 :Leaf;
  self @3 :Shapes;
  # A struct that holds itself.
  bools @4 :List(Bool);
  bytes @5 :List(Int8);
  shorts @6 :List(UInt16);
  colors @7 :List(Color);
  ints @8 :List(Int32);
  floats @9 :List(Float64);
  voids @10 :List(Void);
  texts @11 :List(Text);
  datas @12 :List(Data);
  leaves @13 :List(Leaf);
  nested @14 :List(List(Text));
  deeper @15 :List(List(List(Leaf)));
  matrix @16 :List(List(Float32));
  any @17 :AnyPointer;
  probe @18 :Probe;
  probes @19 :List(Probe);
  defaulted @20 :Text = "fallback";
  defaultLeaf @21 :Leaf = (name = "default", n = 3);
  defaultList @22 :List(Text) = ["a", "b"];
  count @23 :UInt64;

  union {
    none @24 :Void;
    word @25 :Text;
    kids @26 :List(Shapes);
    # Recursive through a list, as CacheLogRecord's batch.
    pair :group {
      left @27 :Text;
      right @28 :Leaf;
      union {
        # A union inside a group inside a union.
        off @29 :Void;
        on @30 :Data;
        more :group {
          deep @31 :Text;
          tail @32 :List(Text);
        }
      }
    }
  }

  choice :union {
    first @33 :Text;
    second @34 :List(Leaf);
  }

  settings :group {
    label @35 :Text;
    tags @36 :List(Text);
  }
}
