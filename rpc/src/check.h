// Internal to rpc/: the two halves of checkFields(), apart, for the tests and
// the fuzz harness that hold them to the same verdicts.
#pragma once

#include <capnp/any.h>
#include <capnp/schema.h>

#include <string_view>

namespace zmesh::rpc {

// The reference: reads every field through capnp's Dynamic API; throws
// FrameError naming the field, in the words checkFields() must give too.
void checkFieldsDynamic(capnp::AnyPointer::Reader root, capnp::StructSchema schema,
                        std::string_view what);

// The compiled plan alone: true when every read it makes succeeds, false when
// one throws (checkFields() then throws FrameError naming where).
bool checkFieldsFast(capnp::AnyPointer::Reader root, capnp::StructSchema schema);

}  // namespace zmesh::rpc
