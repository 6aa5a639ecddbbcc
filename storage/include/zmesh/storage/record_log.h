// Framing of zmesh's append-only files (journal logs and snapshots).
//
//   file   := header record*
//   header := "ZMLOG" version:u8 reserved:u8[2]                (8 bytes)
//   record := length:u32le checksum:u64le payload[length]      (12 + length bytes)
//
// `checksum` is XXH3_64bits(payload). A crash can leave the last record torn
// (short, or with garbage where the page cache never reached the disk), and a
// torn record can look like anything, so the first record that is short, fails
// its checksum or claims an absurd length ends the file: it and everything
// after it are cut, never trusted. The checksum also catches a corrupted
// length field, since it then covers the wrong bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace zmesh::storage {

inline constexpr std::string_view kLogMagic = "ZMLOG";
inline constexpr uint8_t kLogFormatVersion = 1;
inline constexpr size_t kLogHeaderSize = 8;
inline constexpr size_t kRecordHeaderSize = 12;
// Larger payloads are refused by the writer, and a length above this is read
// as a torn record: a sane length can't be told from garbage otherwise.
inline constexpr size_t kMaxRecordSize = size_t{64} << 20;

// The 8-byte header every file starts with.
std::string logFileHeader();

// One framed record. Throws std::length_error above kMaxRecordSize.
std::string encodeRecord(std::string_view payload);
// Same, appended to `out` (batches many records into one write).
void appendRecord(std::string& out, std::string_view payload);

struct ReplayResult {
  // The payloads of the complete records, in order, as views into the input.
  std::vector<std::string_view> records;
  // Length of the trusted prefix: header plus complete records (0 when not
  // even the header is complete).
  uint64_t validBytes = 0;
  // True when bytes follow the trusted prefix (a torn or corrupt tail).
  bool torn = false;
};

// Parses a whole file. An empty file, or one whose header was torn (shorter
// than 8 bytes but a prefix of a header, or zero-filled as some file systems
// leave unwritten blocks after a crash), holds no records and is valid up to
// 0 bytes: records are only written once the header is durable, so no record
// can have been lost with it. A complete header with another magic or version
// throws StorageError ("not a zmesh log file" / "unsupported log format
// version N").
ReplayResult readLog(std::string_view fileBytes);

}  // namespace zmesh::storage
