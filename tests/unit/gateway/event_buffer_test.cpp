#include "event_buffer.h"

#include <catch2/catch.hpp>
#include <stdexcept>
#include <string>
#include <vector>

using namespace zmesh::gateway;

namespace {

std::vector<uint64_t> positions(const std::vector<BufferedEvent>& events) {
  std::vector<uint64_t> out;
  for (const BufferedEvent& e : events) out.push_back(e.position);
  return out;
}

std::vector<uint64_t> range(uint64_t from, uint64_t to) {  // inclusive; empty when from > to
  std::vector<uint64_t> out;
  for (uint64_t p = from; p <= to; ++p) out.push_back(p);
  return out;
}

// since() that requires a well-formed id.
EventBuffer::Resume resume(const EventBuffer& buffer, std::string_view id,
                           const TopicFilter& filter = {}) {
  auto error = EventBuffer::IdError::kMalformed;  // since() must reset it
  auto result = buffer.since(id, filter, &error);
  REQUIRE(error == EventBuffer::IdError::kNone);
  return result;
}

EventBuffer filled(size_t capacity, int count) {
  EventBuffer buffer(capacity, "inc");
  for (int i = 1; i <= count; ++i)
    buffer.append("t." + std::to_string(i), "{\"n\":" + std::to_string(i) + "}");
  return buffer;
}

}  // namespace

TEST_CASE("EventBuffer: construction is validated", "[event_buffer]") {
  CHECK_THROWS_AS(EventBuffer(0, "inc"), std::invalid_argument);
  for (const char* bad : {"", "a-b", "-", "a b", "a_b", "a.b", "\xc3\xa9"}) {
    INFO("incarnation: " << bad);
    CHECK_THROWS_AS(EventBuffer(4, bad), std::invalid_argument);
  }
  EventBuffer buffer(4, "Ab09");
  CHECK(buffer.incarnation() == "Ab09");
  CHECK(buffer.capacity() == 4);
  CHECK(buffer.size() == 0);
  CHECK(buffer.newestPosition() == 0);
}

TEST_CASE("EventBuffer: append assigns consecutive ids", "[event_buffer]") {
  EventBuffer buffer(8, "k7");
  const BufferedEvent& first = buffer.append("ids.allocated", "{\"a\":1}");
  CHECK(first.position == 1);
  CHECK(first.id == "k7-1");
  CHECK(first.topic == "ids.allocated");
  CHECK(first.data == "{\"a\":1}");
  const BufferedEvent& second = buffer.append("locks.acquired", "{}");
  CHECK(second.position == 2);
  CHECK(second.id == "k7-2");
  CHECK(buffer.size() == 2);
  CHECK(buffer.newestPosition() == 2);
  for (uint64_t p = 3; p <= 12; ++p) {
    CHECK(buffer.append("t", "d").id == "k7-" + std::to_string(p));
  }
}

TEST_CASE("EventBuffer: the oldest event is evicted at capacity", "[event_buffer]") {
  SECTION("capacity 3") {
    EventBuffer buffer(3, "inc");
    for (uint64_t p = 1; p <= 10; ++p) {
      buffer.append("t", std::to_string(p));
      CHECK(buffer.size() == std::min<uint64_t>(p, 3));
      CHECK(buffer.newestPosition() == p);
    }
    auto all = resume(buffer, "other-1");  // another incarnation: everything buffered
    CHECK(positions(all.events) == std::vector<uint64_t>{8, 9, 10});
    CHECK(all.events[0].data == "8");
    CHECK(all.events[2].id == "inc-10");
  }
  SECTION("capacity 1 keeps only the newest") {
    EventBuffer buffer(1, "inc");
    buffer.append("t", "1");
    buffer.append("t", "2");
    CHECK(buffer.size() == 1);
    CHECK(positions(resume(buffer, "x-1").events) == std::vector<uint64_t>{2});
    auto after1 = resume(buffer, "inc-1");
    CHECK_FALSE(after1.gap);
    CHECK(positions(after1.events) == std::vector<uint64_t>{2});
  }
}

TEST_CASE("EventBuffer: resume after every possible id", "[event_buffer]") {
  // Capacity 4 after 10 appends holds positions 7..10.
  const EventBuffer buffer = filled(4, 10);
  for (uint64_t last = 1; last <= 14; ++last) {
    INFO("Last-Event-ID: inc-" << last);
    auto result = resume(buffer, "inc-" + std::to_string(last));
    if (last < 6) {  // 7..last+1 … 6 evicted
      CHECK(result.gap);
      CHECK(positions(result.events) == range(7, 10));
    } else if (last <= 10) {  // 6: the next one (7) is still here, so nothing lost
      CHECK_FALSE(result.gap);
      CHECK(positions(result.events) == range(last + 1, 10));
    } else {  // never issued
      CHECK(result.gap);
      CHECK(positions(result.events) == range(7, 10));
    }
  }
}

TEST_CASE("EventBuffer: resumed events are complete copies", "[event_buffer]") {
  const EventBuffer buffer = filled(4, 3);
  auto result = resume(buffer, "inc-1");
  REQUIRE(result.events.size() == 2);
  CHECK(result.events[0].position == 2);
  CHECK(result.events[0].id == "inc-2");
  CHECK(result.events[0].topic == "t.2");
  CHECK(result.events[0].data == "{\"n\":2}");
  CHECK(result.events[1].id == "inc-3");
}

TEST_CASE("EventBuffer: a reconnecting client sees every event exactly once", "[event_buffer]") {
  // Each round: events arrive while the client is connected, it drops, `missed`
  // more arrive (never more than the capacity), and it reconnects with the id of
  // the last event it got. Nothing may be lost or repeated.
  struct Round {
    int live;
    int missed;
  };
  const std::vector<Round> rounds = {{1, 0}, {2, 5}, {0, 3}, {3, 1},
                                     {1, 5}, {0, 0}, {2, 4}, {0, 5}};
  EventBuffer buffer(5, "inc");
  std::vector<uint64_t> received;
  std::string lastId;
  for (const Round& round : rounds) {
    for (int i = 0; i < round.live; ++i) {
      const BufferedEvent& e = buffer.append("t", "live");
      received.push_back(e.position);
      lastId = e.id;
    }
    for (int i = 0; i < round.missed; ++i) buffer.append("t", "missed");
    INFO("reconnect after " << lastId);
    auto result = resume(buffer, lastId);
    CHECK_FALSE(result.gap);
    for (const BufferedEvent& e : result.events) {
      received.push_back(e.position);
      lastId = e.id;
    }
  }
  CHECK(buffer.newestPosition() == 32);
  CHECK(received == range(1, 32));
}

TEST_CASE("EventBuffer: topic filters", "[event_buffer]") {
  SECTION("matching") {
    const TopicFilter all;
    CHECK(all.matches("anything"));
    CHECK(all.matches(""));
    CHECK(all.prefixes().empty());

    const TopicFilter some({"ids.", "locks.acq"});
    CHECK(some.prefixes() == std::vector<std::string>{"ids.", "locks.acq"});
    CHECK(some.matches("ids."));
    CHECK(some.matches("ids.allocated"));
    CHECK(some.matches("locks.acquired"));
    CHECK_FALSE(some.matches("ids"));  // shorter than the prefix
    CHECK_FALSE(some.matches("idsx"));
    CHECK_FALSE(some.matches("locks.released"));
    CHECK_FALSE(some.matches("cache.ids.x"));  // a prefix, not a substring
    CHECK_FALSE(some.matches(""));
    CHECK_FALSE(some.matches("IDS.allocated"));  // case-sensitive

    const TopicFilter emptyPrefix({""});
    CHECK(emptyPrefix.matches("anything"));
  }
  SECTION("applied when resuming") {
    EventBuffer buffer(10, "inc");
    buffer.append("ids.a", "1");
    buffer.append("cache.b", "2");
    buffer.append("ids.c", "3");
    buffer.append("locks.d", "4");
    buffer.append("ids.e", "5");
    const TopicFilter ids({"ids."});
    CHECK(positions(resume(buffer, "inc-1", ids).events) == std::vector<uint64_t>{3, 5});
    CHECK(positions(resume(buffer, "inc-3", ids).events) == std::vector<uint64_t>{5});
    CHECK(resume(buffer, "inc-5", ids).events.empty());
    const TopicFilter two({"locks.", "cache."});
    CHECK(positions(resume(buffer, "inc-1", two).events) == std::vector<uint64_t>{2, 4});
    auto other = resume(buffer, "old-3", ids);
    CHECK(other.gap);
    CHECK(positions(other.events) == std::vector<uint64_t>{1, 3, 5});
    const TopicFilter none({"nothing."});
    auto empty = resume(buffer, "inc-2", none);
    CHECK_FALSE(empty.gap);
    CHECK(empty.events.empty());
  }
  SECTION("an eviction is a gap even if the lost events would not have matched") {
    EventBuffer buffer(2, "inc");
    buffer.append("ids.a", "1");
    buffer.append("cache.b", "2");
    buffer.append("cache.c", "3");
    buffer.append("ids.d", "4");
    auto result = resume(buffer, "inc-1", TopicFilter({"ids."}));
    CHECK(result.gap);  // 2 is gone; the buffer cannot know it did not match
    CHECK(positions(result.events) == std::vector<uint64_t>{4});
  }
}

TEST_CASE("EventBuffer: gaps", "[event_buffer]") {
  const EventBuffer buffer = filled(3, 5);  // holds 3..5
  SECTION("another incarnation") {
    for (const char* id : {"old-4", "INC-4", "inc2-4", "in-4", "old-1", "old-99999"}) {
      INFO("id: " << id);
      auto result = resume(buffer, id);
      CHECK(result.gap);
      CHECK(positions(result.events) == range(3, 5));
    }
  }
  SECTION("evicted") {
    auto result = resume(buffer, "inc-1");
    CHECK(result.gap);
    CHECK(positions(result.events) == range(3, 5));
  }
  SECTION("ahead of the newest") {
    for (const char* id : {"inc-6", "inc-1000", "inc-18446744073709551615"}) {
      INFO("id: " << id);
      auto result = resume(buffer, id);
      CHECK(result.gap);
      CHECK(positions(result.events) == range(3, 5));
    }
  }
  SECTION("an empty buffer") {
    const EventBuffer empty(3, "inc");
    for (const char* id : {"inc-1", "old-1"}) {
      INFO("id: " << id);
      auto result = resume(empty, id);
      CHECK(result.gap);
      CHECK(result.events.empty());
    }
  }
}

TEST_CASE("EventBuffer: malformed ids", "[event_buffer]") {
  const EventBuffer buffer = filled(3, 5);
  const std::vector<std::string> malformed = {
      "",
      "abc",
      "x-",
      "-1",
      "-",
      "inc-abc",
      "inc-18446744073709551616",  // 2^64
      "inc-99999999999999999999999",
      "inc-0",   // positions start at 1
      "inc-04",  // not as issued
      "inc--4",
      "inc-+4",
      "inc- 4",
      "inc-4 ",
      " inc-4",
      "inc-4x",
      "inc-4-5",
      "in c-4",
      "in_c-4",
      "inc-\xd9\xa4",  // Arabic-Indic digit four
      std::string("inc-4\0", 6),
  };
  for (const std::string& id : malformed) {
    INFO("id: '" << id << "'");
    auto error = EventBuffer::IdError::kNone;
    auto result = buffer.since(id, {}, &error);
    CHECK(error == EventBuffer::IdError::kMalformed);
    CHECK_FALSE(result.gap);
    CHECK(result.events.empty());
    // Without an error out-parameter it still returns nothing.
    auto silent = buffer.since(id, {}, nullptr);
    CHECK(silent.events.empty());
  }
  SECTION("a good id after a bad one clears the error") {
    auto error = EventBuffer::IdError::kNone;
    buffer.since("bad", {}, &error);
    REQUIRE(error == EventBuffer::IdError::kMalformed);
    auto result = buffer.since("inc-4", {}, &error);
    CHECK(error == EventBuffer::IdError::kNone);
    CHECK(positions(result.events) == std::vector<uint64_t>{5});
  }
}

TEST_CASE("EventBuffer: a resume is bounded in bytes, keeping the newest", "[event_buffer]") {
  EventBuffer buffer(100, "inc");
  for (int i = 1; i <= 50; ++i) buffer.append("t.x", std::string(100, 'd'));
  const size_t each = EventBuffer::eventBytes(buffer.since("inc-49", {}, nullptr).events.at(0));
  SECTION("under the bound: everything, no gap") {
    auto r = buffer.since("inc-40", {}, nullptr, 10 * each);
    CHECK_FALSE(r.gap);
    CHECK_FALSE(r.truncated);
    CHECK(positions(r.events) == range(41, 50));
  }
  SECTION("over it: the newest that fit, with a gap") {
    auto r = buffer.since("inc-10", {}, nullptr, 5 * each + each / 2);
    CHECK(r.gap);
    CHECK(r.truncated);
    CHECK(positions(r.events) == range(46, 50));
  }
  SECTION("an id from elsewhere is bounded too") {
    auto r = buffer.since("other-3", {}, nullptr, 3 * each);
    CHECK(r.gap);
    CHECK(r.truncated);
    CHECK(positions(r.events) == range(48, 50));
  }
  SECTION("only matching events count") {
    buffer.append("u.y", "{}");
    auto r = buffer.since("inc-45", TopicFilter({"u."}), nullptr, each);
    CHECK_FALSE(r.truncated);
    CHECK(positions(r.events) == range(51, 51));
  }
}
