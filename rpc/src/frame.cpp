#include "zmesh/rpc/frame.h"

#include <capnp/dynamic.h>

#include <bit>
#include <cstring>
#include <limits>
#include <new>

namespace zmesh::rpc {

FrameMessage::FrameMessage(const void* data, size_t size, const capnp::ReaderOptions& options) {
  if (size == 0 || size % sizeof(capnp::word) != 0)
    throw FrameError("frame of " + std::to_string(size) + " bytes is not a whole number of words");
  // libzmq hands out tcp/ipc frames at arbitrary offsets and capnp 0.9 rejects
  // unaligned segments, so read from an aligned copy.
  storage_.reset(new (::operator new(sizeof(Storage) + size)) Storage);
  sizeInWords_ = size / sizeof(capnp::word);
  std::memcpy(storage_->words(), data, size);
  kj::ArrayPtr<const capnp::word> words(storage_->words(), sizeInWords_);
  openMessage(words, [&]() -> capnp::FlatArrayMessageReader& {
    return storage_->reader.emplace(words, options);
  });
}

FrameMessage::FrameMessage(zmq::message_t frame, size_t offset,
                           const capnp::ReaderOptions& options) {
  if (offset > frame.size()) throw FrameError("message offset past the frame's end");
  const char* at = static_cast<const char*>(frame.data()) + offset;
  // A copy when unaligned, and for a small frame, which libzmq keeps inside the
  // message object: its bytes would move with it.
  if (reinterpret_cast<uintptr_t>(at) % alignof(capnp::word) != 0 || frame.size() <= 64) {
    *this = FrameMessage(at, frame.size() - offset, options);
    return;
  }
  storage_.reset(new (::operator new(sizeof(Storage))) Storage);
  storage_->frame = std::move(frame);
  kj::Array<capnp::word> unused;  // aligned, and it stays where it is: read in place
  auto words = frameWords(storage_->frame, offset, unused);
  KJ_ASSERT(unused == nullptr);
  sizeInWords_ = words.size();
  openMessage(words, [&]() -> capnp::FlatArrayMessageReader& {
    return storage_->reader.emplace(words, options);
  });
}

kj::ArrayPtr<const capnp::word> frameWords(const zmq::message_t& frame, size_t offset,
                                           kj::Array<capnp::word>& copy) {
  if (offset > frame.size()) throw FrameError("message offset past the frame's end");
  size_t size = frame.size() - offset;
  if (size == 0 || size % sizeof(capnp::word) != 0)
    throw FrameError("frame of " + std::to_string(size) + " bytes is not a whole number of words");
  const char* at = static_cast<const char*>(frame.data()) + offset;
  size_t count = size / sizeof(capnp::word);
  if (reinterpret_cast<uintptr_t>(at) % alignof(capnp::word) == 0)
    return kj::arrayPtr(reinterpret_cast<const capnp::word*>(at), count);
  // libzmq hands out tcp/ipc frames at arbitrary offsets of its receive
  // buffer, and capnp 0.9 rejects unaligned segments.
  if (copy.size() < count) copy = kj::heapArray<capnp::word>(count);
  std::memcpy(copy.begin(), at, size);
  return copy.slice(0, count);
}

void FrameMessage::Release::operator()(Storage* storage) const {
  storage->~Storage();
  ::operator delete(storage);
}

FrameMessage readFrame(const zmq::message_t& frame, const capnp::ReaderOptions& options,
                       size_t offset) {
  if (offset > frame.size()) throw FrameError("message offset past the frame's end");
  if (offset == frame.size()) return emptyMessage();
  return FrameMessage(static_cast<const char*>(frame.data()) + offset, frame.size() - offset,
                      options);
}

FrameMessage readFrame(zmq::message_t&& frame, const capnp::ReaderOptions& options, size_t offset) {
  if (offset == frame.size()) return emptyMessage();
  return FrameMessage(std::move(frame), offset, options);
}

capnp::ReaderOptions readerOptionsFor(size_t maxBytes) {
  capnp::ReaderOptions options;
  options.traversalLimitInWords = 4 * (maxBytes / sizeof(capnp::word)) + 1024;
  options.nestingLimit = 64;
  return options;
}

FlatMessage::FlatMessage(capnp::MessageBuilder& message)
    : segments_(message.getSegmentsForOutput()) {
  if (segments_.size() == 1 && segments_[0].size() == 0) return;  // nothing in it
  bytes_ = capnp::computeSerializedSizeInWords(segments_) * sizeof(capnp::word);
}

void FlatMessage::writeTo(void* out) const {
  if (bytes_ == 0) return;
  // The segment table (count - 1, then each size, padded to a whole word) in
  // capnp's little-endian, then the segments.
  static_assert(std::endian::native == std::endian::little);
  auto* pos = static_cast<unsigned char*>(out);
  auto put = [&](uint32_t v) {
    std::memcpy(pos, &v, sizeof(v));
    pos += sizeof(v);
  };
  put(static_cast<uint32_t>(segments_.size() - 1));
  for (auto seg : segments_) put(static_cast<uint32_t>(seg.size()));
  if (segments_.size() % 2 == 0) put(0);
  for (auto seg : segments_) {
    std::memcpy(pos, seg.begin(), seg.size() * sizeof(capnp::word));
    pos += seg.size() * sizeof(capnp::word);
  }
}

zmq::message_t toFrame(capnp::MessageBuilder& message) {
  FlatMessage flat(message);
  zmq::message_t frame(flat.bytes());
  flat.writeTo(frame.data());
  return frame;
}

std::string toRecord(capnp::MessageBuilder& message) {
  FlatMessage flat(message);
  std::string bytes(flat.bytes(), '\0');
  flat.writeTo(bytes.data());
  return bytes;
}

FrameMessage emptyMessage() {
  // One segment of one word holding a null root pointer. Ours, and read
  // without end by whoever keeps it (a thread's shared empty reply): no budget.
  static const uint32_t kEmpty[4] = {0, 1, 0, 0};
  capnp::ReaderOptions unlimited;
  unlimited.traversalLimitInWords = std::numeric_limits<uint64_t>::max();
  return FrameMessage(kEmpty, sizeof(kEmpty), unlimited);
}

}  // namespace zmesh::rpc
