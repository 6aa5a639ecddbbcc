// Little-endian integer encoding for on-disk formats. Internal.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace zmesh::storage::detail {

inline void putLe(std::string& out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

// Reads `bytes` bytes at `offset`; the caller has checked the bounds.
inline uint64_t getLe(std::string_view in, size_t offset, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) {
    v |= uint64_t{static_cast<unsigned char>(in[offset + static_cast<size_t>(i)])} << (8 * i);
  }
  return v;
}

}  // namespace zmesh::storage::detail
