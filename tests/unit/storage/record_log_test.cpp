#include "zmesh/storage/record_log.h"

#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "zmesh/storage/env.h"

using namespace zmesh::storage;

namespace {

std::vector<std::string> samplePayloads() {
  return {"",
          "a",
          "hello world",
          std::string(1000, 'x'),
          std::string(70000, '\x7f'),
          std::string("\0\1\2\3", 4)};
}

struct Log {
  std::string bytes;
  std::vector<size_t> ends;  // offset just past each record
};

Log buildLog(const std::vector<std::string>& payloads) {
  Log log{logFileHeader(), {}};
  for (const auto& p : payloads) {
    log.bytes += encodeRecord(p);
    log.ends.push_back(log.bytes.size());
  }
  return log;
}

std::vector<std::string> copies(const ReplayResult& r) {
  return {r.records.begin(), r.records.end()};
}

}  // namespace

TEST_CASE("log header is the magic then the version then two reserved bytes", "[record_log]") {
  const std::string h = logFileHeader();
  REQUIRE(h.size() == kLogHeaderSize);
  CHECK(h.substr(0, 5) == "ZMLOG");
  CHECK(static_cast<uint8_t>(h[5]) == kLogFormatVersion);
  CHECK(h[6] == '\0');
  CHECK(h[7] == '\0');
}

TEST_CASE("record framing is length then checksum then payload", "[record_log]") {
  const std::string r = encodeRecord("abc");
  REQUIRE(r.size() == kRecordHeaderSize + 3);
  CHECK(static_cast<uint8_t>(r[0]) == 3);  // little-endian length
  CHECK(r[1] == '\0');
  CHECK(r[2] == '\0');
  CHECK(r[3] == '\0');
  CHECK(r.substr(12) == "abc");

  std::string batch = "prefix";
  appendRecord(batch, "abc");
  CHECK(batch == "prefix" + r);
}

TEST_CASE("records round-trip", "[record_log]") {
  const auto payloads = samplePayloads();
  const Log log = buildLog(payloads);
  const ReplayResult r = readLog(log.bytes);
  CHECK(copies(r) == payloads);
  CHECK(r.validBytes == log.bytes.size());
  CHECK_FALSE(r.torn);
}

TEST_CASE("an empty file or a header alone holds no records", "[record_log]") {
  ReplayResult r = readLog("");
  CHECK(r.records.empty());
  CHECK(r.validBytes == 0);
  CHECK_FALSE(r.torn);

  r = readLog(logFileHeader());
  CHECK(r.records.empty());
  CHECK(r.validBytes == kLogHeaderSize);
  CHECK_FALSE(r.torn);
}

TEST_CASE("every truncation point recovers exactly the complete records before it",
          "[record_log]") {
  const auto payloads = samplePayloads();
  const Log log = buildLog(payloads);
  for (size_t cut = 0; cut <= log.bytes.size(); ++cut) {
    INFO("cut at " << cut);
    const ReplayResult r = readLog(std::string_view(log.bytes).substr(0, cut));
    size_t complete = 0;
    while (complete < log.ends.size() && log.ends[complete] <= cut) ++complete;
    const size_t valid = complete > 0 ? log.ends[complete - 1] : (cut >= kLogHeaderSize ? 8 : 0);
    REQUIRE(r.records.size() == complete);
    REQUIRE(copies(r) == std::vector<std::string>(payloads.begin(), payloads.begin() + complete));
    REQUIRE(r.validBytes == valid);
    REQUIRE(r.torn == (cut != valid));
  }
}

TEST_CASE("a flipped byte cuts the log at the record holding it", "[record_log]") {
  const std::vector<std::string> payloads = {"first", "second record", "", "fourth", "fifth!"};
  const Log log = buildLog(payloads);
  for (size_t pos = kLogHeaderSize; pos < log.bytes.size(); ++pos) {
    for (int bit : {0, 7}) {
      INFO("byte " << pos << " bit " << bit);
      std::string bad = log.bytes;
      bad[pos] = static_cast<char>(bad[pos] ^ (1 << bit));
      size_t hit = 0;
      while (log.ends[hit] <= pos) ++hit;
      const ReplayResult r = readLog(bad);
      REQUIRE(copies(r) == std::vector<std::string>(payloads.begin(), payloads.begin() + hit));
      REQUIRE(r.validBytes == (hit > 0 ? log.ends[hit - 1] : kLogHeaderSize));
      REQUIRE(r.torn);
    }
  }
}

TEST_CASE("a bad header is an error and not an empty log", "[record_log]") {
  std::string log = logFileHeader() + encodeRecord("x");

  SECTION("unsupported version") {
    log[5] = 2;
    CHECK_THROWS_MATCHES(
        readLog(log), StorageError,
        Catch::Matchers::Message("unsupported log format version 2 (this build reads version 1)"));
  }
  SECTION("wrong magic") {
    log[0] = 'X';
    CHECK_THROWS_WITH(readLog(log), Catch::Contains("not a zmesh log file"));
  }
  SECTION("short file that is not a header") {
    CHECK_THROWS_WITH(readLog("ZMX"), Catch::Contains("not a zmesh log file"));
  }
}

TEST_CASE("a torn or zero-filled header holds no records", "[record_log]") {
  for (size_t n = 1; n < kLogHeaderSize; ++n) {
    const ReplayResult r = readLog(logFileHeader().substr(0, n));
    CHECK(r.records.empty());
    CHECK(r.validBytes == 0);
    CHECK(r.torn);
  }
  const ReplayResult r = readLog(std::string(4096, '\0'));
  CHECK(r.records.empty());
  CHECK(r.validBytes == 0);
  CHECK(r.torn);
}

TEST_CASE("a zero-filled tail is cut", "[record_log]") {
  const Log log = buildLog({"a", "b"});
  const std::string file = log.bytes + std::string(4096, '\0');
  const ReplayResult r = readLog(file);
  CHECK(copies(r) == std::vector<std::string>{"a", "b"});
  CHECK(r.validBytes == log.bytes.size());
  CHECK(r.torn);
}

TEST_CASE("an absurd length is read as a torn record", "[record_log]") {
  std::string log = logFileHeader() + encodeRecord("ok");
  const size_t good = log.size();
  std::string huge = encodeRecord("x");
  const uint32_t len = kMaxRecordSize + 1;
  for (int i = 0; i < 4; ++i)
    huge[static_cast<size_t>(i)] = static_cast<char>((len >> (8 * i)) & 0xff);
  log += huge;
  log.append(100, 'y');
  const ReplayResult r = readLog(log);
  CHECK(copies(r) == std::vector<std::string>{"ok"});
  CHECK(r.validBytes == good);
  CHECK(r.torn);
}

TEST_CASE("the writer refuses records above the limit", "[record_log]") {
  const std::string big(kMaxRecordSize + 1, 'z');
  CHECK_THROWS_AS(encodeRecord(big), std::length_error);
  std::string out;
  CHECK_THROWS_AS(appendRecord(out, big), std::length_error);
  CHECK(out.empty());
  CHECK(encodeRecord(std::string_view(big).substr(0, kMaxRecordSize)).size() ==
        kMaxRecordSize + kRecordHeaderSize);
}
