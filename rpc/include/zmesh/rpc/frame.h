// Capnp messages in ZeroMQ frames: how a frame becomes a message and back.
//
// Frames from the network are untrusted. A frame is accepted only when its size
// is a whole number of words, the message it encodes ends exactly at the frame's
// end, and reading all of it stays within the ReaderOptions limits.
#pragma once

#include <capnp/message.h>
#include <capnp/schema.h>
#include <capnp/serialize.h>
#include <kj/array.h>

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <zmq.hpp>

namespace zmesh::rpc {

// The words of `frame` from byte `offset` on, for a reader: in place when they
// are word-aligned (libzmq's own receive buffers are), else copied into `copy`
// (kept by the caller for the next frame, grown as needed). Throws FrameError when they are
// not a whole number of words.
kj::ArrayPtr<const capnp::word> frameWords(const zmq::message_t& frame, size_t offset,
                                           kj::Array<capnp::word>& copy);

// A message read from a frame: the frame itself, kept, or an aligned copy of
// its bytes.
class FrameMessage {
 public:
  // Throws FrameError when the bytes are not one well-formed message.
  FrameMessage(const void* data, size_t size, const capnp::ReaderOptions& options);
  // Takes the frame and reads it from byte `offset`, in place where it can.
  FrameMessage(zmq::message_t frame, size_t offset, const capnp::ReaderOptions& options);
  FrameMessage(FrameMessage&&) = default;
  FrameMessage& operator=(FrameMessage&&) = default;

  template <typename T>
  typename T::Reader root() {
    return storage_->reader->getRoot<T>();
  }
  capnp::AnyPointer::Reader any() { return storage_->reader->getRoot<capnp::AnyPointer>(); }
  size_t sizeInWords() const { return sizeInWords_; }

 private:
  // The reader and what it reads: the frame, or right behind the reader a
  // copy of the words. One allocation per message.
  struct Storage {
    std::optional<capnp::FlatArrayMessageReader> reader;
    zmq::message_t frame;
    capnp::word* words() { return reinterpret_cast<capnp::word*>(this + 1); }
  };
  struct Release {
    void operator()(Storage* storage) const;
  };
  static_assert(sizeof(Storage) % sizeof(capnp::word) == 0);
  std::unique_ptr<Storage, Release> storage_;
  size_t sizeInWords_ = 0;
};

class FrameError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Opens `words` (aligned) as exactly one well-formed message ending at their
// end, traversed once. `open` builds the reader — on the heap, or in a caller's
// buffer (headers are read from the stack, twice per call) — and returns it.
// Throws FrameError.
template <typename Open>
capnp::FlatArrayMessageReader& openMessage(kj::ArrayPtr<const capnp::word> words, Open&& open) {
  try {
    capnp::FlatArrayMessageReader& reader = open();
    if (reader.getEnd() != words.end())
      throw FrameError("frame has bytes after the end of its message");
    // Bounds and traversal check. A message whose pointers share their targets
    // reads more than it holds, and each further read costs that much again:
    // capnp's builders never make one, so it is refused.
    auto size = reader.getRoot<capnp::AnyPointer>().targetSize();
    if (size.wordCount > words.size())
      throw FrameError("message reads " + std::to_string(size.wordCount) + " words but holds " +
                       std::to_string(words.size()) + ": its pointers share their targets");
    return reader;
  } catch (const kj::Exception& e) {
    throw FrameError(std::string("malformed message: ") + e.getDescription().cStr());
  }
}

// Reads the message in `frame` from byte `offset` to the end, eagerly (the
// whole message is traversed once, so a malformed message is rejected here
// rather than half-way through a method). Nothing there is the empty message.
FrameMessage readFrame(const zmq::message_t& frame, const capnp::ReaderOptions& options,
                       size_t offset = 0);
// The same, keeping the frame: no copy when its bytes are word-aligned.
FrameMessage readFrame(zmq::message_t&& frame, const capnp::ReaderOptions& options,
                       size_t offset = 0);

// Cap'n Proto checks bounds when a message is opened, but pointer kinds and
// Text termination only when a field is read, by throwing kj::Exception. This
// reads every field of `root` as `schema` declares it (nested structs and
// lists too, the active union member only), so a message that is almost right
// (a list where a struct belongs, a Text without its NUL, a far pointer to a
// missing segment, nesting past the limit) is refused here, inside the error
// boundary, rather than later in whoever reads it. AnyPointer and capability
// fields are left to their readers. `what` names the root in the error.
// Throws FrameError naming the field: "params.namespace: Message contains
// non-text pointer where text pointer was expected."
void checkFields(capnp::AnyPointer::Reader root, capnp::StructSchema schema, std::string_view what);

// checkFields() runs the reads a plan compiled once per schema lists
// (rpc/src/check.cpp), not the Dynamic API's walk. checkPlanFor() compiles (or
// finds) the plan for `schema` ahead of time, e.g. when a server registers its
// methods; the overload takes it with the schema it came from. Plans live as
// long as the process (thread-safe; for schemas compiled into the binary).
class CheckPlan;
const CheckPlan& checkPlanFor(capnp::StructSchema schema);
void checkFields(capnp::AnyPointer::Reader root, const CheckPlan& plan, capnp::StructSchema schema,
                 std::string_view what);

// Reader limits for messages of at most `maxBytes`: the traversal budget allows
// the bounds check, checkFields() and two full reads by the application (a
// message read by openMessage never reads more than it holds).
capnp::ReaderOptions readerOptionsFor(size_t maxBytes);

// A builder's flat serialisation (segment table, then the segments), written
// straight where it goes: messageToFlatArray would allocate and copy once more.
// A builder with nothing in it serialises to nothing (see emptyMessage()).
class FlatMessage {
 public:
  explicit FlatMessage(capnp::MessageBuilder& message);
  size_t bytes() const { return bytes_; }
  void writeTo(void* out) const;  // exactly bytes() bytes, 8-byte aligned or not

 private:
  kj::ArrayPtr<const kj::ArrayPtr<const capnp::word>> segments_;
  size_t bytes_ = 0;
};

// Serialises a builder into one frame.
zmq::message_t toFrame(capnp::MessageBuilder& message);

// A builder as the bytes a log record or snapshot stores.
std::string toRecord(capnp::MessageBuilder& message);

// Opens a stored record (log, snapshot) as the untrusted bytes it may be — a
// format mismatch or a damaged data directory must fail loudly rather than
// read garbage — checks it against T's schema and calls fn(T::Reader).
// Throws FrameError naming `what` and the field, also for a read past the checks.
template <typename T, typename Fn>
void readRecord(const std::string& bytes, std::string_view what, Fn&& fn) {
  try {
    FrameMessage message(bytes.data(), bytes.size(), readerOptionsFor(bytes.size()));
    checkFields(message.any(), capnp::Schema::from<T>(), what);
    fn(message.root<T>());
  } catch (const kj::Exception& e) {
    throw FrameError(std::string(what) + ": " + e.getDescription().cStr());
  }
}

// An empty frame stands for "no struct" (a method without params or results);
// this is the message a reader sees for it.
FrameMessage emptyMessage();

}  // namespace zmesh::rpc
