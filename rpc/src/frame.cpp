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

namespace {

// Walks a message by schema; `path` is the field being read, for the error.
class FieldChecker {
 public:
  explicit FieldChecker(std::string_view root) : path_(root) {}

  void checkStruct(capnp::DynamicStruct::Reader s) {
    auto schema = s.getSchema();
    for (auto field : schema.getNonUnionFields()) checkField(s, field);
    // Only the active member: the others share its storage.
    KJ_IF_MAYBE (active, s.which()) {
      checkField(s, *active);
    }
  }

  // Turns what capnp throws into a FrameError naming where it was reading.
  template <typename Fn>
  void at(std::string_view step, bool index, Fn&& fn) {
    size_t mark = path_.size();
    if (!index) path_ += '.';
    path_ += step;
    try {
      fn();
    } catch (const kj::Exception& e) {
      throw FrameError(path_ + ": " + e.getDescription().cStr());
    }
    path_.resize(mark);
  }

 private:
  static bool isPointer(capnp::schema::Type::Which t) {
    using W = capnp::schema::Type;
    return t == W::TEXT || t == W::DATA || t == W::LIST || t == W::STRUCT;
  }

  void checkField(capnp::DynamicStruct::Reader s, capnp::StructSchema::Field field) {
    auto proto = field.getProto();
    if (proto.isGroup()) {
      at(proto.getName().cStr(), false,
         [&] { checkStruct(s.get(field).as<capnp::DynamicStruct>()); });
      return;
    }
    auto type = field.getType();
    // Data fields are always readable; AnyPointer and capabilities are left to
    // whoever knows what they hold.
    if (!isPointer(type.which())) return;
    at(proto.getName().cStr(), false, [&] { checkValue(s.get(field)); });
  }

  void checkValue(capnp::DynamicValue::Reader v) {
    switch (v.getType()) {
      case capnp::DynamicValue::STRUCT:
        checkStruct(v.as<capnp::DynamicStruct>());
        break;
      case capnp::DynamicValue::LIST:
        checkList(v.as<capnp::DynamicList>());
        break;
      default:  // Text and Data are checked by being read
        break;
    }
  }

  void checkList(capnp::DynamicList::Reader list) {
    // A list of data values was checked whole when it was read.
    if (!isPointer(list.getSchema().whichElementType())) return;
    for (uint i = 0; i < list.size(); ++i) {
      char index[16];
      std::snprintf(index, sizeof(index), "[%u]", i);
      at(index, true, [&] { checkValue(list[i]); });
    }
  }

  std::string path_;
};

}  // namespace

void checkFields(capnp::AnyPointer::Reader root, capnp::StructSchema schema,
                 std::string_view what) {
  FieldChecker checker(what);
  checker.at("", true, [&] { checker.checkStruct(root.getAs<capnp::DynamicStruct>(schema)); });
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
