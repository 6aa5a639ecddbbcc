// Messages built to be almost right: structurally valid Cap'n Proto (a segment
// table that adds up, pointers in bounds) whose pointers have the wrong kind,
// whose Text lacks its NUL, or that nests too deep. Random bytes almost never
// reach the lazy checks these reach (DESIGN.md §2), so tests, fuzz seeds and
// the soak test send these.
#pragma once

#include <capnp/message.h>
#include <capnp/schema.h>

#include <cstdint>
#include <string>
#include <vector>
#include <zmq.hpp>

namespace zmesh::testing::crafted {

using Bytes = std::vector<uint8_t>;

// One segment of one word whose root pointer is an empty list, not a struct:
// 00000000 01000000 01000000 00000000.
Bytes listAsRoot();

// What to do to one pointer of a message's root struct.
enum class Damage {
  kStructPointer,     // an empty struct where a Text, Data or List belongs
  kListPointer,       // an empty list where a struct belongs
  kCapability,        // a capability pointer (zmesh messages carry none)
  kUnterminatedText,  // the Text's NUL overwritten
  kFarToMissingSegment,
  kHugeList,  // a list claiming 2^29 elements (out of bounds: refused at open)
};
const char* name(Damage damage);
inline constexpr Damage kAllDamage[] = {Damage::kStructPointer,       Damage::kListPointer,
                                        Damage::kCapability,          Damage::kUnterminatedText,
                                        Damage::kFarToMissingSegment, Damage::kHugeList};

// `message` serialised flat (one segment, as MallocMessageBuilder makes small
// ones), with pointer `index` of its root struct damaged.
Bytes damaged(capnp::MessageBuilder& message, unsigned index, Damage damage);

// `message` with pointer `to` of its root struct aimed at pointer `from`'s
// target: in bounds, every kind right, but the target is read twice.
Bytes aliased(capnp::MessageBuilder& message, unsigned from, unsigned to);

// A message whose root is a list of lists nested `depth` deep.
Bytes deepNesting(unsigned depth);

// An idl::Event as a zmesh publisher builds it (publisher "hostile@test",
// incarnation 1), with a BlockReserved body; with `bodyDamage`, the body's
// namespace pointer damaged so.
zmq::message_t eventOf(const std::string& topic, uint64_t sequence,
                       const Damage* bodyDamage = nullptr);

// A PUB of the test's own on a broker's XSUB: sends whatever frames it is given.
struct RawPublisher {
  RawPublisher(zmq::context_t& context, const std::string& xsub);
  void send(const std::string& topic, const zmq::message_t& body);
  zmq::socket_t socket;
};

// As a ZeroMQ frame; `prefix` (a request or reply header) goes first.
zmq::message_t frame(const Bytes& bytes, const zmq::message_t* prefix = nullptr);
Bytes bytesOf(const zmq::message_t& frame);

// Every struct that goes on the wire or to disk (each IDL method's params and
// results, the log records, snapshots and events) and the test schemas'
// (test.Shapes has every shape of field), in a fixed order: the check fuzz
// corpus's first byte indexes it, so new ones go at the end.
const std::vector<capnp::StructSchema>& wireStructs();

}  // namespace zmesh::testing::crafted
