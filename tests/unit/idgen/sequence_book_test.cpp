#include "sequence_book.h"

#include <catch2/catch.hpp>
#include <limits>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

using namespace zmesh::idgen;

namespace {

constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();

template <class T>
T expect(const SequenceBook::Outcome& outcome) {
  if (const auto* failure = std::get_if<Failure>(&outcome)) {
    INFO("failure: " << failure->message);
    REQUIRE(std::holds_alternative<T>(outcome));
  }
  REQUIRE(std::holds_alternative<T>(outcome));
  return std::get<T>(outcome);
}

IdRange range(const SequenceBook::Outcome& outcome) { return expect<IdRange>(outcome); }
Failure failure(const SequenceBook::Outcome& outcome) { return expect<Failure>(outcome); }
void pending(const SequenceBook::Outcome& outcome) { expect<Pending>(outcome); }

// Takes the one reservation expected, makes it "durable" and returns what it served.
SequenceBook::Served reserveOnce(SequenceBook& book, const std::string& ns) {
  auto reservations = book.takeReservations();
  REQUIRE(reservations.size() == 1);
  REQUIRE(reservations[0].ns == ns);
  return book.reserved(ns, reservations[0].limit);
}

}  // namespace

TEST_CASE("SequenceBook: namespace validation", "[sequence]") {
  struct Row {
    std::string ns;
    bool ok;
    std::string message;  // Expected substring when rejected.
  };
  const std::vector<Row> rows = {
      {"orders", true, ""},
      {"a", true, ""},
      {"A-Z.a_z:0-9", true, ""},
      {"tenant:acme.orders-2025_v1", true, ""},
      {std::string(128, 'x'), true, ""},
      {"", false, "namespace is empty"},
      {std::string(129, 'x'), false, "is 129 characters long; at most 128 allowed"},
      {"a b", false,
       "namespace 'a b' has invalid character ' ' at position 1; allowed: A-Z a-z 0-9 . _ : -"},
      {"orders/1", false, "invalid character '/' at position 6"},
      {"ørders", false, "invalid character '\\xc3' at position 0"},
      {std::string("a\0b", 3), false, "namespace 'a\\x00b' has invalid character '\\x00'"},
      {"tab\there", false, "invalid character '\\x09' at position 3"},
      {"back\\slash", false, "invalid character '\\x5c' at position 4"},
      {"semi;colon", false, "invalid character ';' at position 4"},
      {"*", false, "invalid character '*' at position 0"},
      {"orders ", false, "at position 6"},
  };
  for (const Row& row : rows) {
    INFO("namespace: " << row.ns);
    auto result = validateNamespace(row.ns);
    if (row.ok) {
      CHECK_FALSE(result.has_value());
    } else {
      REQUIRE(result.has_value());
      CHECK(result->code == Fail::invalidArgument);
      CHECK_THAT(result->message, Catch::Contains(row.message));
    }
  }

  SECTION("long invalid namespaces are echoed truncated") {
    auto result = validateNamespace(std::string(100, 'a') + "!");
    REQUIRE(result);
    CHECK_THAT(result->message, Catch::Contains("'" + std::string(64, 'a') + "...'"));
    CHECK_THAT(result->message, Catch::Contains("'!' at position 100"));
  }

  SECTION("request() validates the namespace and count before creating anything") {
    SequenceBook book;
    CHECK(failure(book.request(1, "a b", 1)).code == Fail::invalidArgument);
    CHECK(failure(book.request(2, "orders", 0)).message ==
          "count 0 is out of range; must be 1..10000");
    CHECK(failure(book.request(3, "orders", 10001)).code == Fail::invalidArgument);
    CHECK(book.stats().namespaces == 0);
    CHECK(book.takeReservations().empty());
  }
}

TEST_CASE("SequenceBook: options are validated", "[sequence]") {
  CHECK_FALSE(SequenceBookOptions{}.validate());
  CHECK(SequenceBookOptions{.blockSize = 0}.validate());
  CHECK(SequenceBookOptions{.prefetchFraction = -0.1}.validate());
  CHECK(SequenceBookOptions{.prefetchFraction = 1.5}.validate());
  CHECK(
      SequenceBookOptions{.prefetchFraction = std::numeric_limits<double>::quiet_NaN()}.validate());
  CHECK(SequenceBookOptions{.maxNamespaces = 0}.validate());
  CHECK(SequenceBookOptions{.blockSize = 10, .maxBlockSize = 9}.validate());
  CHECK_FALSE(SequenceBookOptions{.blockSize = 10, .maxBlockSize = 10}.validate());
  CHECK(SequenceBookOptions{.maxBlockSize = 1'000'000'001}.validate());
  CHECK(SequenceBookOptions{.blockDuration = std::chrono::milliseconds(-1)}.validate());
  // Growing blocks need a clock to tell how long one lasted.
  CHECK(SequenceBookOptions{.blockDuration = std::chrono::milliseconds(1000)}.validate());
  CHECK_FALSE(SequenceBookOptions{
      .blockDuration = std::chrono::milliseconds(1000), .clock = [] {
        return std::chrono::milliseconds(0);
      }}.validate());
  CHECK_FALSE(SequenceBookOptions{.blockSize = 1, .prefetchFraction = 1.0}.validate());
  CHECK_THROWS_AS(SequenceBook(SequenceBookOptions{.blockSize = 0}), std::invalid_argument);
}

TEST_CASE("SequenceBook: a new namespace starts at 1 once its first block is durable",
          "[sequence]") {
  SequenceBook book;
  pending(book.request(7, "orders", 1));
  CHECK(book.stats().waitingTickets == 1);

  auto reservations = book.takeReservations();
  REQUIRE(reservations.size() == 1);
  // Demand (id 1) plus one block.
  CHECK(reservations[0] == Reservation{"orders", 1, 1002});
  CHECK(book.takeReservations().empty());  // At most one in flight.
  CHECK(book.inspect("orders")->inFlightLimit == 1002);

  auto served = book.reserved("orders", 1002);
  REQUIRE(served.size() == 1);
  CHECK(served[0].first == 7);
  CHECK(served[0].second == IdRange{1, 1});

  CHECK(range(book.request(8, "orders", 5)) == IdRange{2, 5});
  CHECK(range(book.request(9, "orders", 1)) == IdRange{7, 1});
  auto state = *book.inspect("orders");
  CHECK(state.next == 8);
  CHECK(state.limit == 1002);
  CHECK(state.inFlightLimit == 0);
  CHECK(book.stats().reservationsIssued == 1);
  CHECK(book.stats().idsIssued == 7);
}

TEST_CASE("SequenceBook: blocks and prefetch emission points", "[sequence]") {
  SequenceBook book;  // blockSize 1000, prefetch below 500 remaining.
  pending(book.request(1, "s", 1));
  reserveOnce(book, "s");  // limit 1002, next 2: 1000 remain.

  // Down to exactly 500 remaining: not below the threshold yet.
  CHECK(range(book.request(2, "s", 500)) == IdRange{2, 500});
  CHECK(book.inspect("s")->limit - book.inspect("s")->next == 500);
  CHECK(book.takeReservations().empty());

  // 499 remaining: the next block is reserved ahead of need, from the current limit.
  CHECK(range(book.request(3, "s", 1)) == IdRange{502, 1});
  auto reservations = book.takeReservations();
  REQUIRE(reservations.size() == 1);
  CHECK(reservations[0] == Reservation{"s", 1002, 2002});

  // While it is in flight, ids keep flowing from the current block without waiting.
  CHECK(range(book.request(4, "s", 499)) == IdRange{503, 499});
  CHECK(book.takeReservations().empty());
  // The block is used up: the next request waits for the reservation in flight.
  pending(book.request(5, "s", 10));
  CHECK(book.takeReservations().empty());

  auto served = book.reserved("s", 2002);
  REQUIRE(served.size() == 1);
  CHECK(served[0] == std::pair<uint64_t, IdRange>{5, IdRange{1002, 10}});
  // 990 remain: above the threshold, nothing more to reserve.
  CHECK(book.takeReservations().empty());
  CHECK(book.stats().reservationsIssued == 2);
  CHECK(book.stats().reservationsInFlight == 0);
}

TEST_CASE("SequenceBook: prefetch fraction and block size options", "[sequence]") {
  SECTION("fraction 0 reserves only on demand") {
    SequenceBook book(SequenceBookOptions{.blockSize = 10, .prefetchFraction = 0.0});
    pending(book.request(1, "s", 1));
    reserveOnce(book, "s");  // limit 12
    CHECK(range(book.request(2, "s", 10)) == IdRange{2, 10});
    CHECK(book.takeReservations().empty());  // 0 remain, but nobody waits.
    pending(book.request(3, "s", 1));
    auto reservations = book.takeReservations();
    REQUIRE(reservations.size() == 1);
    CHECK(reservations[0].limit == 12 + 1 + 10);
  }
  SECTION("fraction 1 keeps a whole block ahead") {
    SequenceBook book(SequenceBookOptions{.blockSize = 10, .prefetchFraction = 1.0});
    pending(book.request(1, "s", 1));
    reserveOnce(book, "s");  // limit 12, next 2: 10 remain, not below 10.
    CHECK(book.takeReservations().empty());
    CHECK(range(book.request(2, "s", 1)) == IdRange{2, 1});
    auto reservations = book.takeReservations();
    REQUIRE(reservations.size() == 1);
    CHECK(reservations[0] == Reservation{"s", 12, 22});
  }
  SECTION("a fraction that is not a whole number of ids rounds up") {
    SequenceBook book(SequenceBookOptions{.blockSize = 3, .prefetchFraction = 0.5});
    pending(book.request(1, "s", 1));
    reserveOnce(book, "s");  // limit 5, next 2: 3 remain; prefetch below ceil(1.5) = 2.
    CHECK(range(book.request(2, "s", 1)) == IdRange{2, 1});
    CHECK(book.takeReservations().empty());  // 2 remain.
    CHECK(range(book.request(3, "s", 1)) == IdRange{3, 1});
    CHECK(book.takeReservations().size() == 1);  // 1 remains.
  }
}

// A book on a clock the test moves.
class ClockedBook {
 public:
  explicit ClockedBook(SequenceBookOptions options) : book(withClock(options)) {}
  ClockedBook(const ClockedBook&) = delete;  // the clock refers to this object
  ClockedBook& operator=(const ClockedBook&) = delete;

  std::chrono::milliseconds now{0};
  SequenceBook book;
  uint64_t ticket = 0;

  // After `lasted`, uses the block of `ns` down to its prefetch point, takes the
  // reservation that triggers and makes it durable at once; returns it.
  Reservation drainAfter(std::chrono::milliseconds lasted, const std::string& ns = "s") {
    now += lasted;
    auto s = *book.inspect(ns);
    const uint64_t prefetchAt = (s.blockSize + 1) / 2;  // ceil(0.5 * block): reserve below it
    const uint64_t take = s.limit - s.next - prefetchAt + 1;
    CHECK(range(book.request(++ticket, ns, static_cast<uint32_t>(take))).count == take);
    return takeDurable(ns);
  }
  // Asks for every id left in the block of `ns` and `beyond` more, so the call waits;
  // returns the reservation that takes (not yet durable).
  Reservation waitFor(uint64_t beyond, const std::string& ns = "s") {
    auto s = book.inspect(ns).value_or(SequenceState{.next = 1, .limit = 1});
    pending(book.request(++ticket, ns, static_cast<uint32_t>(s.limit - s.next + beyond)));
    return takeOne(ns);
  }
  // The one reservation expected, of `ns`.
  Reservation takeOne(const std::string& ns = "s") {
    auto reservations = book.takeReservations();
    REQUIRE(reservations.size() == 1);
    REQUIRE(reservations[0].ns == ns);
    return reservations[0];
  }
  // The one reservation expected, made durable now.
  Reservation takeDurable(const std::string& ns = "s") {
    auto r = takeOne(ns);
    book.reserved(ns, r.limit);
    return r;
  }
  // The first request of `ns` waits for its first block, made durable now.
  void start(const std::string& ns = "s") {
    auto r = waitFor(1, ns);
    CHECK(r.limit == 1 + 1 + book.options().blockSize);
    book.reserved(ns, r.limit);
  }

 private:
  SequenceBookOptions withClock(SequenceBookOptions options) {
    options.clock = [this] { return now; };
    return options;
  }
};

SequenceBookOptions adaptive(uint64_t blockSize, uint64_t maxBlockSize) {
  return SequenceBookOptions{.blockSize = blockSize,
                             .maxBlockSize = maxBlockSize,
                             .blockDuration = std::chrono::milliseconds(1000),
                             .prefetchFraction = 0.5};
}

uint64_t width(const Reservation& r) { return r.limit - r.from; }

TEST_CASE("SequenceBook: blocks grow while they last less than blockDuration, shrink after",
          "[sequence]") {
  using std::chrono::milliseconds;
  ClockedBook a(adaptive(10, 70));  // 70: not a doubling of 10
  a.start();
  CHECK(a.book.inspect("s")->blockSize == 10);

  // Each block lasted 100 ms < 1 s: the next is twice as large, up to maxBlockSize.
  for (uint64_t block : {20, 40, 70, 70}) {
    CHECK(width(a.drainAfter(milliseconds(100))) == block);
    CHECK(a.book.inspect("s")->blockSize == block);
  }
  // Lasting between blockDuration and twice it: kept.
  CHECK(width(a.drainAfter(milliseconds(1500))) == 70);
  // Lasting more than twice blockDuration: halved, down to blockSize.
  for (uint64_t block : {35, 17, 10, 10}) CHECK(width(a.drainAfter(milliseconds(2001))) == block);
  // Exactly blockDuration is not less than it, exactly twice not more than twice: kept.
  CHECK(width(a.drainAfter(milliseconds(100))) == 20);
  CHECK(width(a.drainAfter(milliseconds(1000))) == 20);
  CHECK(width(a.drainAfter(milliseconds(2000))) == 20);
  CHECK(a.book.stats().ticketsWaited == 1);  // only the first request waited
}

TEST_CASE("SequenceBook: the prefetch point follows the block's current size", "[sequence]") {
  using std::chrono::milliseconds;
  ClockedBook a(adaptive(10, 1000));
  // Leaves exactly `remaining` ids (no reservation yet), then takes one more (reservation).
  auto reservesBelow = [&a](uint64_t remaining) {
    auto s = *a.book.inspect("s");
    REQUIRE(s.limit - s.next > remaining);
    const auto fill = static_cast<uint32_t>(s.limit - s.next - remaining);
    CHECK(range(a.book.request(++a.ticket, "s", fill)).count == fill);
    CHECK(a.book.takeReservations().empty());
    CHECK(range(a.book.request(++a.ticket, "s", 1)).count == 1);
    return a.takeDurable();
  };
  a.start();
  CHECK(width(a.drainAfter(milliseconds(10))) == 20);  // grown: reserve below 10 left
  a.now += milliseconds(5000);
  CHECK(width(reservesBelow(10)) == 10);  // that block lasted 5 s: shrunk to 10
  reservesBelow(5);                       // and so reserve below 5 left
}

TEST_CASE("SequenceBook: a slow reservation does not shrink the block: time runs from durable",
          "[sequence]") {
  using std::chrono::milliseconds;
  ClockedBook a(adaptive(10, 1000));
  a.start();
  CHECK(width(a.drainAfter(milliseconds(100))) == 20);
  // The next reservation takes 2.5 s to become durable (a stalled disk).
  auto s = *a.book.inspect("s");
  CHECK(range(a.book.request(100, "s", static_cast<uint32_t>(s.limit - s.next - 9))).count > 0);
  auto r = a.takeOne();
  CHECK(width(r) == 40);
  a.now += milliseconds(2500);
  a.book.reserved("s", r.limit);
  // Used up 100 ms after it became durable: short, so the block grows.
  CHECK(width(a.drainAfter(milliseconds(100))) == 80);
}

TEST_CASE("SequenceBook: waiting demand is covered, then one grown block more", "[sequence]") {
  using std::chrono::milliseconds;
  ClockedBook a(adaptive(10, 1000));
  a.start();
  CHECK(width(a.drainAfter(milliseconds(100))) == 20);
  a.now += milliseconds(100);
  auto limit = a.book.inspect("s")->limit;
  CHECK(a.waitFor(7).limit == limit + 7 + 40);
}

TEST_CASE("SequenceBook: a failed reservation starts the block again at blockSize", "[sequence]") {
  using std::chrono::milliseconds;
  ClockedBook a(adaptive(10, 1000));
  a.start();
  for (uint64_t block : {20, 40}) CHECK(width(a.drainAfter(milliseconds(10))) == block);
  // Fast retries against a failing disk: each fails; none may grow the block.
  for (int retry = 0; retry < 5; ++retry) {
    a.now += milliseconds(10);
    CHECK(width(a.waitFor(1)) == (retry == 0 ? 1 + 80 : 1 + 10));
    CHECK(a.book.reservationFailed("s", "disk full").size() == 1);
    CHECK(a.book.inspect("s")->blockSize == 10);
  }
  // Once the disk is back, the block grows again from blockSize.
  a.now += milliseconds(10);
  auto r = a.waitFor(1);
  CHECK(width(r) == 1 + 10);  // the first block after a failure is not resized
  a.book.reserved("s", r.limit);
  CHECK(width(a.drainAfter(milliseconds(10))) == 20);
}

TEST_CASE("SequenceBook: a restored namespace starts again at blockSize", "[sequence]") {
  using std::chrono::milliseconds;
  ClockedBook a(adaptive(10, 1000));
  a.start();
  for (uint64_t block : {20, 40, 80}) CHECK(width(a.drainAfter(milliseconds(10))) == block);
  ClockedBook restarted(adaptive(10, 1000));
  REQUIRE_FALSE(restarted.book.restore("s", a.book.snapshot().front().second));
  CHECK(restarted.book.inspect("s")->blockSize == 10);
  CHECK(width(restarted.waitFor(1)) == 1 + 10);
}

TEST_CASE("SequenceBook: a grown block stops at the end of the id space", "[sequence]") {
  using std::chrono::milliseconds;
  ClockedBook a(adaptive(10, 1000));
  REQUIRE_FALSE(a.book.restore("s", kMax - 60));
  auto r = a.waitFor(1);
  CHECK(r.limit == kMax - 60 + 1 + 10);
  a.book.reserved("s", r.limit);
  CHECK(a.drainAfter(milliseconds(1)).limit == kMax - 49 + 20);
  auto last = a.drainAfter(milliseconds(1));  // would be 40 more: past the end
  CHECK(last.from == kMax - 29);
  CHECK(last.limit == kMax);
  CHECK(a.book.inspect("s")->blockSize == 40);
}

TEST_CASE("SequenceBook: blockDuration 0 keeps every block at blockSize", "[sequence]") {
  ClockedBook a(SequenceBookOptions{.blockSize = 10, .maxBlockSize = 1000});
  a.start();
  for (int i = 0; i < 5; ++i) {
    a.now += std::chrono::milliseconds(1);  // blocks used up at once would otherwise grow
    auto r = a.waitFor(1);
    CHECK(width(r) == 1 + 10);  // the one waiting id plus one block
    a.book.reserved("s", r.limit);
  }
  CHECK(a.book.inspect("s")->blockSize == 10);
}

TEST_CASE("SequenceBook: a namespace's block size is its own", "[sequence]") {
  using std::chrono::milliseconds;
  ClockedBook a(adaptive(10, 1000));
  a.start("busy");
  a.start("quiet");
  for (uint64_t block : {20, 40, 80}) CHECK(width(a.drainAfter(milliseconds(1), "busy")) == block);
  CHECK(a.book.inspect("quiet")->blockSize == 10);
  CHECK(width(a.drainAfter(milliseconds(1), "quiet")) == 20);
  CHECK(a.book.inspect("busy")->blockSize == 80);
}

TEST_CASE("SequenceBook: waiters are served in FIFO order across a reservation", "[sequence]") {
  SequenceBook book(SequenceBookOptions{.blockSize = 1000, .prefetchFraction = 0.0});
  pending(book.request(1, "q", 1));
  reserveOnce(book, "q");                                      // limit 1002, next 2.
  CHECK(range(book.request(2, "q", 900)) == IdRange{2, 900});  // next 902, 100 remain.

  pending(book.request(10, "q", 600));  // Does not fit.
  // Would fit in the 100 left, but an earlier ticket waits: it must not overtake it.
  pending(book.request(11, "q", 1));
  pending(book.request(12, "q", 50));
  CHECK(book.inspect("q")->waitingIds == 651);

  auto reservations = book.takeReservations();
  REQUIRE(reservations.size() == 1);
  // All waiting demand (902 + 651) plus one block.
  CHECK(reservations[0] == Reservation{"q", 1002, 902 + 651 + 1000});

  auto served = book.reserved("q", reservations[0].limit);
  REQUIRE(served.size() == 3);
  CHECK(served[0] == std::pair<uint64_t, IdRange>{10, IdRange{902, 600}});
  CHECK(served[1] == std::pair<uint64_t, IdRange>{11, IdRange{1502, 1}});
  CHECK(served[2] == std::pair<uint64_t, IdRange>{12, IdRange{1503, 50}});
  CHECK(book.stats().waitingTickets == 0);
  CHECK(range(book.request(13, "q", 1)) == IdRange{1553, 1});
}

TEST_CASE("SequenceBook: demand arriving while a reservation is in flight gets another one",
          "[sequence]") {
  SequenceBook book(SequenceBookOptions{.blockSize = 10, .prefetchFraction = 0.0});
  pending(book.request(1, "d", 5));
  auto first = book.takeReservations();
  REQUIRE(first.size() == 1);
  CHECK(first[0].limit == 1 + 5 + 10);
  // More demand than the reservation in flight covers.
  pending(book.request(2, "d", 20));
  pending(book.request(3, "d", 1));
  CHECK(book.takeReservations().empty());

  auto served = book.reserved("d", first[0].limit);  // limit 16: ticket 1 (5 ids), 10 left.
  REQUIRE(served.size() == 1);
  CHECK(served[0].second == IdRange{1, 5});
  auto second = book.takeReservations();
  REQUIRE(second.size() == 1);
  CHECK(second[0] == Reservation{"d", 16, 6 + 21 + 10});
  served = book.reserved("d", second[0].limit);
  REQUIRE(served.size() == 2);
  CHECK(served[0].second == IdRange{6, 20});
  CHECK(served[1].second == IdRange{26, 1});
}

TEST_CASE("SequenceBook: many namespaces are independent", "[sequence]") {
  SequenceBook book(SequenceBookOptions{.blockSize = 100});
  const std::vector<std::string> names = {"a", "b", "tenant:1.orders", "tenant:2.orders"};
  uint64_t ticket = 0;
  for (const auto& ns : names) pending(book.request(++ticket, ns, 3));
  auto reservations = book.takeReservations();
  REQUIRE(reservations.size() == names.size());
  std::set<std::string> reservedNames;
  for (const auto& r : reservations) {
    CHECK(r.from == 1);
    CHECK(r.limit == 1 + 3 + 100);
    reservedNames.insert(r.ns);
  }
  CHECK(reservedNames == std::set<std::string>(names.begin(), names.end()));

  // Making one durable serves only that namespace.
  auto served = book.reserved("b", 104);
  REQUIRE(served.size() == 1);
  CHECK(served[0] == std::pair<uint64_t, IdRange>{2, IdRange{1, 3}});
  CHECK(book.stats().waitingTickets == 3);

  // A failure in one namespace leaves the others alone.
  auto failed = book.reservationFailed("a", "disk full");
  REQUIRE(failed.size() == 1);
  CHECK(failed[0].first == 1);
  CHECK(book.stats().waitingTickets == 2);
  CHECK(range(book.request(99, "b", 1)) == IdRange{4, 1});

  for (const auto& ns : {"tenant:1.orders", "tenant:2.orders"}) {
    served = book.reserved(ns, 104);
    REQUIRE(served.size() == 1);
    CHECK(served[0].second == IdRange{1, 3});
  }
  CHECK(book.stats().namespaces == 4);
}

TEST_CASE("SequenceBook: a failed reservation fails its waiters and may be retried", "[sequence]") {
  SequenceBook book;
  pending(book.request(1, "f", 1));
  pending(book.request(2, "f", 2));
  auto reservations = book.takeReservations();
  REQUIRE(reservations.size() == 1);

  auto failed = book.reservationFailed("f", "fsync: EIO");
  REQUIRE(failed.size() == 2);
  CHECK(failed[0].first == 1);
  CHECK(failed[1].first == 2);
  CHECK(failed[0].second.code == Fail::unavailable);
  CHECK(failed[0].second.message == "could not reserve ids for namespace 'f': fsync: EIO");
  auto stats = book.stats();
  CHECK(stats.waitingTickets == 0);
  CHECK(stats.reservationsInFlight == 0);
  CHECK(stats.reservationsFailed == 1);
  CHECK(book.inspect("f")->inFlightLimit == 0);
  CHECK_FALSE(book.cancel(1));
  // Not retried by itself (a failing disk must not be hammered)...
  CHECK(book.takeReservations().empty());

  // ...but by the next request, and ids still start at 1: nothing was issued.
  pending(book.request(3, "f", 1));
  auto served = reserveOnce(book, "f");
  REQUIRE(served.size() == 1);
  CHECK(served[0] == std::pair<uint64_t, IdRange>{3, IdRange{1, 1}});

  CHECK(book.reservationFailed("unknown", "x").empty());
  CHECK(book.reserved("unknown", 10).empty());
}

TEST_CASE("SequenceBook: restore continues at the durable limit", "[sequence]") {
  SequenceBook book;
  REQUIRE_FALSE(book.restore("orders", 1002));
  REQUIRE_FALSE(book.restore("orders", 2002));  // Replay: later records win.
  REQUIRE_FALSE(book.restore("other", 7));
  // Restoring writes nothing by itself.
  CHECK(book.takeReservations().empty());
  CHECK(book.inspect("orders")->next == 2002);
  CHECK(book.inspect("orders")->limit == 2002);

  // The unissued rest of the old block is skipped: ids continue AT the limit.
  pending(book.request(1, "orders", 1));
  auto reservations = book.takeReservations();
  REQUIRE(reservations.size() == 1);
  CHECK(reservations[0] == Reservation{"orders", 2002, 2002 + 1 + 1000});
  auto served = book.reserved("orders", reservations[0].limit);
  REQUIRE(served.size() == 1);
  CHECK(served[0].second == IdRange{2002, 1});

  auto snapshot = book.snapshot();
  REQUIRE(snapshot.size() == 2);
  CHECK(snapshot[0] == std::pair<std::string, uint64_t>{"orders", 3003});
  CHECK(snapshot[1] == std::pair<std::string, uint64_t>{"other", 7});

  SECTION("an older, higher record is never undercut") {
    REQUIRE_FALSE(book.restore("other", 5));
    CHECK(book.inspect("other")->next == 7);
    CHECK(book.inspect("other")->limit == 7);
  }
  SECTION("invalid records are refused") {
    CHECK(book.restore("bad name", 10)->code == Fail::invalidArgument);
    auto zero = book.restore("zero", 0);
    REQUIRE(zero);
    CHECK_THAT(zero->message, Catch::Contains("limit 0"));
    CHECK_FALSE(book.inspect("zero"));
  }
  SECTION("restore ignores maxNamespaces: a forgotten sequence would restart at 1") {
    SequenceBook small(SequenceBookOptions{.maxNamespaces = 1});
    REQUIRE_FALSE(small.restore("a", 10));
    REQUIRE_FALSE(small.restore("b", 10));
    CHECK(small.stats().namespaces == 2);
    CHECK(failure(small.request(1, "c", 1)).code == Fail::failedPrecondition);
    pending(small.request(2, "b", 1));
  }
}

TEST_CASE("SequenceBook: snapshot includes a limit in flight", "[sequence]") {
  SequenceBook book;
  pending(book.request(1, "s", 1));
  auto reservations = book.takeReservations();
  REQUIRE(reservations.size() == 1);
  auto snapshot = book.snapshot();
  REQUIRE(snapshot.size() == 1);
  CHECK(snapshot[0].second == reservations[0].limit);
  // A fresh book restored from that snapshot never repeats what the old one issues.
  book.reserved("s", reservations[0].limit);
  SequenceBook recovered;
  REQUIRE_FALSE(recovered.restore("s", snapshot[0].second));
  CHECK(recovered.inspect("s")->next == reservations[0].limit);
}

TEST_CASE("SequenceBook: counts larger than a block", "[sequence]") {
  SequenceBook book(SequenceBookOptions{.blockSize = 1000});
  pending(book.request(1, "big", 10000));
  auto reservations = book.takeReservations();
  REQUIRE(reservations.size() == 1);
  CHECK(reservations[0].limit == 1 + 10000 + 1000);
  auto served = book.reserved("big", reservations[0].limit);
  REQUIRE(served.size() == 1);
  CHECK(served[0].second == IdRange{1, 10000});
  // One block is left over: smaller requests are served from memory.
  CHECK(range(book.request(2, "big", 1000)) == IdRange{10001, 1000});

  // Another large one waits, while a tiny block size still covers all of it in one go.
  SequenceBook tiny(SequenceBookOptions{.blockSize = 1});
  pending(tiny.request(1, "t", 10000));
  pending(tiny.request(2, "t", 10000));
  reservations = tiny.takeReservations();
  REQUIRE(reservations.size() == 1);
  CHECK(reservations[0].limit == 1 + 20000 + 1);
  served = tiny.reserved("t", reservations[0].limit);
  REQUIRE(served.size() == 2);
  CHECK(served[1].second == IdRange{10001, 10000});
}

TEST_CASE("SequenceBook: a sequence is exhausted near UINT64_MAX", "[sequence]") {
  SequenceBook book;
  REQUIRE_FALSE(book.restore("end", kMax - 5));
  auto f = failure(book.request(1, "end", 6));
  CHECK(f.code == Fail::failedPrecondition);
  CHECK(f.message == "sequence 'end' exhausted: 6 ids asked, 5 left");

  pending(book.request(2, "end", 3));
  // Waiting demand counts: only 2 are left behind ticket 2.
  CHECK(failure(book.request(3, "end", 3)).code == Fail::failedPrecondition);
  pending(book.request(4, "end", 2));

  auto reservations = book.takeReservations();
  REQUIRE(reservations.size() == 1);
  CHECK(reservations[0].limit == kMax);  // Saturated, not wrapped.
  auto served = book.reserved("end", kMax);
  REQUIRE(served.size() == 2);
  CHECK(served[0].second == IdRange{kMax - 5, 3});
  CHECK(served[1].second == IdRange{kMax - 2, 2});
  CHECK(failure(book.request(5, "end", 1)).code == Fail::failedPrecondition);
  // Nothing left to reserve.
  CHECK(book.takeReservations().empty());
}

TEST_CASE("SequenceBook: maxNamespaces bounds the table", "[sequence]") {
  SequenceBook book(SequenceBookOptions{.maxNamespaces = 2});
  pending(book.request(1, "a", 1));
  pending(book.request(2, "b", 1));
  auto f = failure(book.request(3, "c", 1));
  CHECK(f.code == Fail::failedPrecondition);
  CHECK_THAT(f.message, Catch::Contains("limit of 2"));
  pending(book.request(4, "a", 1));  // Existing namespaces still work.
}

TEST_CASE("SequenceBook: cancel drops a waiting ticket", "[sequence]") {
  SequenceBook book;
  pending(book.request(1, "c", 5));
  pending(book.request(2, "c", 1));
  pending(book.request(3, "c", 1));
  CHECK(failure(book.request(2, "c", 1)).message == "ticket 2 is already waiting");
  CHECK(failure(book.request(2, "other", 1)).code == Fail::invalidArgument);

  CHECK(book.cancel(2));
  CHECK_FALSE(book.cancel(2));
  CHECK_FALSE(book.cancel(42));
  CHECK(book.inspect("c")->waitingTickets == 2);
  CHECK(book.inspect("c")->waitingIds == 6);

  auto reservations = book.takeReservations();
  REQUIRE(reservations.size() == 1);
  auto served = book.reserved("c", reservations[0].limit);
  REQUIRE(served.size() == 2);
  CHECK(served[0] == std::pair<uint64_t, IdRange>{1, IdRange{1, 5}});
  CHECK(served[1] == std::pair<uint64_t, IdRange>{3, IdRange{6, 1}});
  // A ticket that was answered may be reused by the caller.
  CHECK(range(book.request(2, "c", 1)) == IdRange{7, 1});
}

TEST_CASE("SequenceBook: books move without losing their waiters", "[sequence]") {
  SequenceBook book;
  pending(book.request(1, "m", 1));
  SequenceBook moved = std::move(book);
  CHECK(moved.cancel(1));
  pending(moved.request(2, "m", 1));
  auto served = reserveOnce(moved, "m");
  REQUIRE(served.size() == 1);
  CHECK(served[0].first == 2);
}

// A model of the service adapter and its log: reservations are appended, later synced (then
// reserved()) or failed (the record may still have reached the disk); a crash keeps the
// synced prefix plus any further prefix of the log; recovery replays it into a new book.
// Whatever happens, no id is issued twice and ids per namespace only grow.
TEST_CASE("SequenceBook: randomized: no id issued twice across reservations, failures and crashes",
          "[sequence][property]") {
  std::mt19937_64 rng(20250101);
  auto pick = [&rng](uint64_t n) { return std::uniform_int_distribution<uint64_t>(0, n - 1)(rng); };
  const std::vector<std::string> names = {"a", "b", "c", "orders", "tenant:9.x"};

  struct Record {
    std::string ns;
    uint64_t limit;
    enum State { pendingSync, synced, failed } state;
  };
  std::vector<Record> log;
  size_t syncedPrefix = 0;  // log[0..syncedPrefix) is durable.

  // Blocks grow and shrink as the simulated clock runs fast or slow.
  std::chrono::milliseconds now(0);
  SequenceBookOptions options{.blockSize = 7,
                              .maxBlockSize = 60,
                              .blockDuration = std::chrono::milliseconds(50),
                              .clock = [&now] { return now; },
                              .prefetchFraction = 0.5};
  auto book = std::make_unique<SequenceBook>(options);
  std::set<uint64_t> blockSizes;
  int grew = 0, shrank = 0;
  std::map<std::string, uint64_t> lastIssued;  // Per namespace, over every incarnation.
  std::map<std::string, uint64_t> durable;     // Last synced record per namespace.
  std::map<std::string, std::set<uint64_t>> seen;
  std::map<uint64_t, std::string> ticketNs;
  uint64_t nextTicket = 1;
  uint64_t issuedTotal = 0;
  int crashes = 0;
  int failures = 0;

  auto accept = [&](uint64_t ticket, IdRange r) {
    const std::string& ns = ticketNs.at(ticket);
    REQUIRE(r.count >= 1);
    // Every id is below a limit that is already durable.
    REQUIRE(r.first + r.count <= durable[ns]);
    REQUIRE(r.first > lastIssued[ns]);
    for (uint64_t id = r.first; id < r.first + r.count; ++id) REQUIRE(seen[ns].insert(id).second);
    lastIssued[ns] = r.first + r.count - 1;
    issuedTotal += r.count;
    ticketNs.erase(ticket);
  };
  auto takeAll = [&] {
    std::map<std::string, uint64_t> before;
    for (const auto& ns : names)
      if (auto state = book->inspect(ns)) before[ns] = state->blockSize;
    for (auto& r : book->takeReservations()) {
      REQUIRE(r.limit > r.from);
      const uint64_t block = book->inspect(r.ns)->blockSize;
      grew += block > before[r.ns];
      shrank += block < before[r.ns];
      REQUIRE(block >= options.blockSize);
      REQUIRE(block <= options.maxBlockSize);
      blockSizes.insert(block);
      log.push_back(Record{r.ns, r.limit, Record::pendingSync});
    }
  };
  auto markDurable = [&](size_t upTo) {
    for (; syncedPrefix < upTo; ++syncedPrefix) {
      const Record& rec = log[syncedPrefix];
      // Replay semantics: the highest limit seen wins (see SequenceBook::restore).
      durable[rec.ns] = std::max(durable[rec.ns], rec.limit);
    }
  };

  for (int step = 0; step < 40000; ++step) {
    // Mostly busy, with quiet spells long enough to shrink the blocks again.
    now += std::chrono::milliseconds(pick(50) == 0 ? 500 + pick(1000) : pick(3));
    const uint64_t dice = pick(100);
    if (dice < 55) {
      const std::string& ns = names[pick(names.size())];
      const uint32_t count =
          pick(10) == 0 ? static_cast<uint32_t>(1 + pick(30)) : static_cast<uint32_t>(1 + pick(4));
      const uint64_t ticket = nextTicket++;
      ticketNs[ticket] = ns;
      auto outcome = book->request(ticket, ns, count);
      if (auto* r = std::get_if<IdRange>(&outcome)) {
        accept(ticket, *r);
      } else {
        REQUIRE(std::holds_alternative<Pending>(outcome));
      }
      takeAll();
    } else if (dice < 80) {
      // Sync the oldest pending record: the fsync covers everything before it too.
      size_t i = syncedPrefix;
      while (i < log.size() && log[i].state != Record::pendingSync) ++i;
      if (i == log.size()) continue;
      markDurable(i + 1);
      log[i].state = Record::synced;
      for (auto& [ticket, r] : book->reserved(log[i].ns, log[i].limit)) accept(ticket, r);
      takeAll();
    } else if (dice < 84) {
      std::vector<size_t> open;
      for (size_t i = syncedPrefix; i < log.size(); ++i) {
        if (log[i].state == Record::pendingSync) open.push_back(i);
      }
      if (open.empty()) continue;
      Record& rec = log[open[pick(open.size())]];
      rec.state = Record::failed;
      ++failures;
      for (auto& [ticket, f] : book->reservationFailed(rec.ns, "injected")) {
        REQUIRE(f.code == Fail::unavailable);
        ticketNs.erase(ticket);
      }
      takeAll();
    } else if (dice < 88) {
      if (ticketNs.empty()) continue;
      auto it = ticketNs.begin();
      std::advance(it, static_cast<long>(pick(ticketNs.size())));
      REQUIRE(book->cancel(it->first));  // Every ticket still listed is waiting.
      ticketNs.erase(it);
    } else if (dice < 90) {
      // Compaction: the snapshot replaces the durable prefix; the records still in flight
      // follow it, as the adapter appends them to the new log.
      std::vector<Record> compacted;
      for (auto& [ns, limit] : book->snapshot()) compacted.push_back({ns, limit, Record::synced});
      const size_t snapshotSize = compacted.size();
      for (size_t i = syncedPrefix; i < log.size(); ++i) compacted.push_back(log[i]);
      log = std::move(compacted);
      syncedPrefix = 0;
      markDurable(snapshotSize);
    } else if (dice < 92) {
      // Crash: the synced prefix survives, plus possibly more of what was written.
      const size_t keep = syncedPrefix + pick(log.size() - syncedPrefix + 1);
      log.resize(keep);
      markDurable(keep);
      for (auto& rec : log) rec.state = Record::synced;
      book = std::make_unique<SequenceBook>(options);
      for (const auto& rec : log) REQUIRE_FALSE(book->restore(rec.ns, rec.limit));
      ticketNs.clear();  // Their clients see the connection fail.
      ++crashes;
    }
  }
  // Drain: everything still waiting gets served once the records are durable.
  for (int round = 0; round < 100 && !ticketNs.empty(); ++round) {
    takeAll();
    for (size_t i = syncedPrefix; i < log.size(); ++i) {
      if (log[i].state != Record::pendingSync) continue;
      markDurable(i + 1);
      log[i].state = Record::synced;
      for (auto& [ticket, r] : book->reserved(log[i].ns, log[i].limit)) accept(ticket, r);
    }
  }
  CHECK(ticketNs.empty());
  CHECK(crashes > 100);
  CHECK(failures > 100);
  CHECK(issuedTotal > 20000);
  // Blocks grew to the largest size, and shrank in the quiet spells.
  CHECK(blockSizes.count(60) == 1);
  CHECK(grew > 100);
  CHECK(shrank > 10);
}

TEST_CASE("SequenceBook: cancelling many waiters, in any order, serves the rest in order",
          "[sequence]") {
  SequenceBook book;
  for (uint64_t t = 1; t <= 1000; ++t) pending(book.request(t, "many", 1));
  // Every other one, back to front, and the last and first (the ends are special).
  for (uint64_t t = 1000; t >= 2; t -= 2) CHECK(book.cancel(t));
  CHECK(book.cancel(1));
  CHECK(book.cancel(999));
  CHECK_FALSE(book.cancel(2));
  CHECK(book.inspect("many")->waitingTickets == 498);
  CHECK(book.inspect("many")->waitingIds == 498);
  auto reservations = book.takeReservations();
  REQUIRE(reservations.size() == 1);
  auto served = book.reserved("many", reservations[0].limit);
  REQUIRE(served.size() == 498);
  uint64_t id = 1;
  for (size_t i = 0; i < served.size(); ++i) {
    CHECK(served[i].first == 3 + 2 * i);  // 3, 5, … 997: the survivors, in order
    CHECK(served[i].second == IdRange{id++, 1});
  }
  CHECK(book.inspect("many")->waitingTickets == 0);
  // Nobody waits any more: a new call is answered at once.
  CHECK(range(book.request(5000, "many", 1)) == IdRange{id, 1});
}

TEST_CASE("SequenceBook: cancelling every waiter leaves none behind", "[sequence]") {
  SequenceBook book;
  for (uint64_t t = 1; t <= 10; ++t) pending(book.request(t, "all", 2));
  for (uint64_t t = 1; t <= 10; ++t) CHECK(book.cancel(t));
  CHECK(book.inspect("all")->waitingTickets == 0);
  CHECK(book.inspect("all")->waitingIds == 0);
  auto reservations = book.takeReservations();
  REQUIRE(reservations.size() == 1);
  CHECK(book.reserved("all", reservations[0].limit).empty());
  CHECK(range(book.request(11, "all", 2)) == IdRange{1, 2});
}
