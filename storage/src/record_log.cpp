#include "zmesh/storage/record_log.h"

#include <algorithm>
#include <stdexcept>

#include "encoding.h"
#include "zmesh/storage/env.h"

// Inlined: no link dependency on libxxhash, and the hash of small records
// gets compiled into the loop that frames them.
#define XXH_INLINE_ALL
#include <xxhash.h>

namespace zmesh::storage {

using detail::getLe;
using detail::putLe;

std::string logFileHeader() {
  std::string h(kLogMagic);
  h.push_back(static_cast<char>(kLogFormatVersion));
  h.append(2, '\0');  // reserved
  return h;
}

void appendRecord(std::string& out, std::string_view payload) {
  if (payload.size() > kMaxRecordSize) {
    throw std::length_error("record of " + std::to_string(payload.size()) +
                            " bytes exceeds the maximum of " + std::to_string(kMaxRecordSize));
  }
  putLe(out, payload.size(), 4);
  putLe(out, XXH3_64bits(payload.data(), payload.size()), 8);
  out.append(payload);
}

std::string encodeRecord(std::string_view payload) {
  std::string out;
  out.reserve(kRecordHeaderSize + payload.size());
  appendRecord(out, payload);
  return out;
}

ReplayResult readLog(std::string_view bytes) {
  ReplayResult r;
  const std::string_view head = bytes.substr(0, kLogHeaderSize);
  const bool zeroed = std::all_of(head.begin(), head.end(), [](char c) { return c == '\0'; });
  const bool magicPrefix = head.substr(0, kLogMagic.size()) ==
                           kLogMagic.substr(0, std::min(head.size(), kLogMagic.size()));
  if (zeroed || (head.size() < kLogHeaderSize && magicPrefix)) {
    r.torn = !bytes.empty();
    return r;
  }
  if (!magicPrefix) throw StorageError("not a zmesh log file (bad magic)");
  const auto version = static_cast<uint8_t>(head[kLogMagic.size()]);
  if (version != kLogFormatVersion) {
    throw StorageError("unsupported log format version " + std::to_string(version) +
                       " (this build reads version " + std::to_string(kLogFormatVersion) + ")");
  }

  size_t pos = kLogHeaderSize;
  while (bytes.size() - pos >= kRecordHeaderSize) {
    const uint64_t length = getLe(bytes, pos, 4);
    const uint64_t checksum = getLe(bytes, pos + 4, 8);
    const size_t start = pos + kRecordHeaderSize;
    if (length > kMaxRecordSize || length > bytes.size() - start) break;
    const std::string_view payload = bytes.substr(start, length);
    if (XXH3_64bits(payload.data(), payload.size()) != checksum) break;
    r.records.push_back(payload);
    pos = start + length;
  }
  r.validBytes = pos;
  r.torn = pos != bytes.size();
  return r;
}

}  // namespace zmesh::storage
