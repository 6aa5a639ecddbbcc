#include "zmesh/rpc/frame.h"

#include <cstring>
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

void FrameMessage::Release::operator()(Storage* storage) const {
  storage->~Storage();
  ::operator delete(storage);
}

FrameMessage readFrame(const zmq::message_t& frame, const capnp::ReaderOptions& options) {
  if (frame.size() == 0) return emptyMessage();
  return FrameMessage(frame.data(), frame.size(), options);
}

capnp::ReaderOptions readerOptionsFor(size_t maxBytes) {
  capnp::ReaderOptions options;
  options.traversalLimitInWords = 4 * (maxBytes / sizeof(capnp::word)) + 1024;
  options.nestingLimit = 64;
  return options;
}

zmq::message_t toFrame(capnp::MessageBuilder& message) {
  auto segments = message.getSegmentsForOutput();
  if (segments.size() == 1 && segments[0].size() == 0) return zmq::message_t();
  zmq::message_t frame(capnp::computeSerializedSizeInWords(segments) * sizeof(capnp::word));
  kj::ArrayPtr<capnp::word> out(static_cast<capnp::word*>(frame.data()),
                                frame.size() / sizeof(capnp::word));
  // messageToFlatArray allocates; writing the segment table ourselves avoids a copy.
  auto table = out.slice(0, (segments.size() + 2) / 2);
  auto* t = reinterpret_cast<uint32_t*>(table.begin());
  t[0] = static_cast<uint32_t>(segments.size() - 1);
  for (size_t i = 0; i < segments.size(); ++i) t[i + 1] = static_cast<uint32_t>(segments[i].size());
  if (segments.size() % 2 == 0) t[segments.size() + 1] = 0;
  auto* pos = table.end();
  for (auto seg : segments) {
    std::memcpy(pos, seg.begin(), seg.size() * sizeof(capnp::word));
    pos += seg.size();
  }
  return frame;
}

FrameMessage emptyMessage() {
  // One segment of one word holding a null root pointer.
  static const uint32_t kEmpty[4] = {0, 1, 0, 0};
  return FrameMessage(kEmpty, sizeof(kEmpty), capnp::ReaderOptions());
}

}  // namespace zmesh::rpc
