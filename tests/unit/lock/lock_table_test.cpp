// The lock table, case by case on an injected clock: validation, FIFO
// fairness, shared runs, semaphores, expiry and lock-delay, fencing tokens and
// their supply, sessions, bounds, inspect/validate and recovery.
#include "lock_table.h"

#include <catch2/catch.hpp>
#include <map>
#include <stdexcept>

#include "harness.h"

namespace zmesh::lock {
namespace {

using test::Harness;
using test::kTtl;
using test::Lines;
using test::why;

constexpr Mode kShared = Mode::shared;

// A granted call's lease, or a failed check.
Lease leaseOf(const Harness& h, uint64_t call) {
  auto lease = h.grantOf(call);
  REQUIRE(lease);
  return *lease;
}

}  // namespace

// ---- validation ----

TEST_CASE("names and owners are checked naming the fault", "[lock_table]") {
  CHECK_FALSE(checkName("orders/42") == std::nullopt);
  CHECK(checkName("Orders.v2:shard-7@eu_west") == std::nullopt);
  CHECK(checkName(std::string(200, 'a')) == std::nullopt);
  CHECK(checkName("") == "name: empty; give 1-200 characters of [A-Za-z0-9._:@-]");
  CHECK(checkName(std::string(201, 'a')) == "name: 201 bytes, more than 200");
  CHECK(checkName("a b") == "name: character ' ' at position 1 is not one of [A-Za-z0-9._:@-]");
  CHECK(checkName(std::string("a\x01", 2)) ==
        "name: character '\\x01' at position 1 is not one of [A-Za-z0-9._:@-]");

  CHECK(checkOwner("worker 7 (pid 42) ~") == std::nullopt);
  CHECK(checkOwner(std::string(128, 'o')) == std::nullopt);
  CHECK(checkOwner("") == "owner: empty; give 1-128 printable ASCII characters");
  CHECK(checkOwner(std::string(129, 'o')) == "owner: 129 bytes, more than 128");
  CHECK(checkOwner("a\tb") == "owner: character '\\x09' at position 1 is not printable ASCII");
  CHECK(checkOwner("caf\xc3\xa9") ==
        "owner: character '\\xc3' at position 3 is not printable ASCII");
}

TEST_CASE("acquire refuses a bad request in a fixed order", "[lock_table]") {
  Harness h;
  CHECK(why(h.acquire({.name = "a b", .owner = ""})) ==
        "invalidArgument: name: character ' ' at position 1 is not one of [A-Za-z0-9._:@-]");
  CHECK(why(h.acquire({.name = "x", .owner = "", .ttl = 5})) ==
        "invalidArgument: owner: empty; give 1-128 printable ASCII characters");
  CHECK(why(h.acquire({.name = "x", .owner = "a", .ttl = 5})) ==
        "invalidArgument: ttl_ms: 5 is below the minimum 10");
  CHECK(why(h.acquire({.name = "x", .owner = "a", .ttl = 3'600'001})) ==
        "invalidArgument: ttl_ms: 3600001 is above the maximum 3600000");
  CHECK(why(h.acquire({.name = "x", .owner = "a", .permits = 10'001})) ==
        "invalidArgument: permits: 10001 is above the maximum 10000");
  CHECK(why(h.acquire({.name = "x", .owner = "a", .mode = kShared, .permits = 3})) ==
        "invalidArgument: mode: shared is for locks; a semaphore (permits 3) is taken "
        "exclusive, a permit at a time");
  CHECK(why(h.acquire({.name = "x", .owner = "a", .wait = -1})) ==
        "invalidArgument: wait_ms: -1 is negative");
  CHECK(why(h.acquire({.name = "x", .owner = "a", .session = 77})) ==
        "notFound: session 77 is not open");
  CHECK(h.out.empty());
  CHECK_FALSE(h.table.inspect("x", h.now));
  CHECK(h.table.stats().locks == 0);
}

// ---- grants and conflicts ----

TEST_CASE("a free lock is granted at once with the next token", "[lock_table]") {
  Harness h;
  h.now = 100;
  CHECK(why(h.acquire({.name = "x", .owner = "alice", .ttl = 500})) == "");
  CHECK(h.events() == Lines{"granted c1 alice t1"});
  Lease l = leaseOf(h, 1);
  CHECK(l.name == "x");
  CHECK(l.expiresAt == 600);
  CHECK(l.mode == Mode::exclusive);
  CHECK(l.permits == 0);
  CHECK(h.table.nextToken() == 2);
  auto st = h.table.stats();
  CHECK(st.grants == 1);
  CHECK(st.grantsImmediate == 1);
  CHECK(st.locks == 1);
  CHECK(st.holders == 1);
}

TEST_CASE("a try-once acquire of a taken lock says what holds it", "[lock_table]") {
  LockOptions o;
  o.lockDelay = 200;
  Harness h(o);
  h.acquire({.name = "x", .owner = "alice"});
  CHECK(why(h.acquire({.name = "x", .owner = "bob"})) ==
        "conflict: 'x' is held by 'alice' (token 1)");
  CHECK(why(h.acquire({.name = "x", .owner = "bob", .mode = kShared})) ==
        "conflict: 'x' is held by 'alice' (token 1)");
  CHECK(h.out.empty());

  h.acquire({.name = "r", .owner = "a", .mode = kShared});
  h.acquire({.name = "r", .owner = "b", .mode = kShared});
  CHECK(why(h.acquire({.name = "r", .owner = "c"})) ==
        "conflict: 'r' is held shared by 'a' (token 2) and 1 other");

  // An exclusive waiter: a shared acquire that would fit the holders still
  // may not pass it.
  CHECK(why(h.acquire({.name = "r", .owner = "c", .wait = 1000})) == "");
  CHECK(why(h.acquire({.name = "r", .owner = "d", .mode = kShared})) ==
        "conflict: 'r' has 1 waiter");

  h.acquire({.name = "d", .owner = "a", .ttl = 100});
  h.at(100);
  CHECK(h.events() == Lines{"expired a t4"});
  h.now = 180;
  CHECK(why(h.acquire({.name = "d", .owner = "b"})) == "conflict: 'd' is in lock-delay for 120 ms");
  CHECK(h.table.stats().conflicts == 5);
}

TEST_CASE("waiters are granted in FIFO order with one exclusive grant per release",
          "[lock_table]") {
  Harness h;
  h.acquire({.name = "x", .owner = "a"});
  for (const char* owner : {"b", "c", "d"})
    CHECK(why(h.acquire({.name = "x", .owner = owner, .wait = 5000})) == "");
  CHECK(h.table.inspect("x", h.now)->waiters == 3);
  CHECK(why(h.release("x", "a", 1)) == "");
  CHECK(h.events() == Lines{"released a t1", "granted c2 b t2"});
  CHECK(why(h.release("x", "b", 2)) == "");
  CHECK(h.events() == Lines{"released b t2", "granted c3 c t3"});
  CHECK(why(h.release("x", "c", 3)) == "");
  CHECK(h.events() == Lines{"released c t3", "granted c4 d t4"});
  CHECK(why(h.release("x", "d", 4)) == "");
  CHECK(h.events() == Lines{"released d t4"});
  CHECK_FALSE(h.table.inspect("x", h.now));
  auto st = h.table.stats();
  CHECK(st.grantsAfterWait == 3);
  CHECK(st.releases == 4);
  CHECK(st.locks == 0);
  CHECK(st.retained == 1);
}

TEST_CASE("the run of shared waiters at the head is granted together up to an exclusive one",
          "[lock_table]") {
  Harness h;
  h.acquire({.name = "x", .owner = "w"});                                  // c1 t1
  h.acquire({.name = "x", .owner = "r1", .wait = 5000, .mode = kShared});  // c2
  h.acquire({.name = "x", .owner = "r2", .wait = 5000, .mode = kShared});  // c3
  h.acquire({.name = "x", .owner = "w2", .wait = 5000});                   // c4
  h.acquire({.name = "x", .owner = "r3", .wait = 5000, .mode = kShared});  // c5
  h.release("x", "w", 1);
  CHECK(h.events() == Lines{"released w t1", "granted c2 r1 t2", "granted c3 r2 t3"});
  // r3 fits the shared holders but waits behind w2: no barging.
  CHECK(h.table.inspect("x", h.now)->waiters == 2);
  h.release("x", "r1", 2);
  CHECK(h.events() == Lines{"released r1 t2"});
  h.release("x", "r2", 3);
  CHECK(h.events() == Lines{"released r2 t3", "granted c4 w2 t4"});
  h.release("x", "w2", 4);
  CHECK(h.events() == Lines{"released w2 t4", "granted c5 r3 t5"});
}

TEST_CASE("a shared lock admits shared holders up to maxSharedHolders", "[lock_table]") {
  LockOptions o;
  o.maxSharedHolders = 2;
  Harness h(o);
  h.acquire({.name = "x", .owner = "a", .mode = kShared});
  h.acquire({.name = "x", .owner = "b", .mode = kShared});
  CHECK(why(h.acquire({.name = "x", .owner = "c", .mode = kShared})) ==
        "conflict: 'x' has 2 shared holders, the most one lock may have");
  CHECK(why(h.acquire({.name = "x", .owner = "c", .wait = 100, .mode = kShared})) == "");
  h.release("x", "a", 1);
  CHECK(h.events() == Lines{"released a t1", "granted c4 c t3"});
}

TEST_CASE("a semaphore grants one permit each and FIFO beyond its permits", "[lock_table]") {
  Harness h;
  for (const char* owner : {"a", "b", "c"})
    CHECK(why(h.acquire({.name = "s", .owner = owner, .permits = 3})) == "");
  CHECK(h.table.inspect("s", h.now)->holders.size() == 3);
  CHECK(why(h.acquire({.name = "s", .owner = "d", .permits = 3})) ==
        "conflict: 's' has all 3 permits taken (by 'a' (token 1) and 2 others)");
  h.acquire({.name = "s", .owner = "d", .wait = 1000, .permits = 3});  // c5
  h.acquire({.name = "s", .owner = "e", .wait = 1000, .permits = 3});  // c6
  h.release("s", "b", 2);
  CHECK(h.events() == Lines{"released b t2", "granted c5 d t4"});
  h.release("s", "a", 1);
  h.release("s", "c", 3);
  CHECK(h.events() == Lines{"released c t3"});
  auto view = h.table.inspect("s", h.now);
  REQUIRE(view);
  CHECK(view->permits == 3);
  REQUIRE(view->holders.size() == 2);
  CHECK(view->holders[0].owner == "d");
  CHECK(view->holders[1].owner == "e");
  CHECK(view->holders[1].permits == 3);
}

TEST_CASE("a name keeps its kind while it lives", "[lock_table]") {
  Harness h;
  h.acquire({.name = "s", .owner = "a", .permits = 3});
  h.acquire({.name = "x", .owner = "a"});
  CHECK(why(h.acquire({.name = "s", .owner = "b", .permits = 5})) ==
        "conflict: 's' is a semaphore of 3 permits, not 5");
  CHECK(why(h.acquire({.name = "s", .owner = "b"})) == "conflict: 's' is a semaphore, not a lock");
  CHECK(why(h.acquire({.name = "x", .owner = "b", .permits = 2})) ==
        "conflict: 'x' is a lock, not a semaphore");
  // Even its holder asks with the right kind.
  CHECK(why(h.acquire({.name = "s", .owner = "a", .permits = 4})) ==
        "conflict: 's' is a semaphore of 3 permits, not 4");
  // Once free, the name may come back as something else.
  h.release("s", "a", 1);
  CHECK(why(h.acquire({.name = "s", .owner = "b", .permits = 5})) == "");
  CHECK(h.table.inspect("s", h.now)->permits == 5);
  CHECK(h.table.inspect("s", h.now)->lastToken == 3);
}

TEST_CASE("an owner that holds the lock gets the same lease back unchanged", "[lock_table]") {
  Harness h;
  h.acquire({.name = "x", .owner = "a", .ttl = 500});
  Lease first = leaseOf(h, 1);
  h.now = 200;
  CHECK(why(h.acquire({.name = "x", .owner = "a", .ttl = 9000, .wait = 10})) == "");
  CHECK(h.events() == Lines{"granted c2 a t1"});
  Lease again = leaseOf(h, 2);
  CHECK(again.token == first.token);
  CHECK(again.expiresAt == 500);
  CHECK(again.mode == Mode::exclusive);
  auto st = h.table.stats();
  CHECK(st.reacquired == 1);
  CHECK(st.grants == 1);
  CHECK(h.table.nextToken() == 2);
  // Not as something else: a shared lease, or one of a session, is another request.
  CHECK(why(h.acquire({.name = "x", .owner = "a", .mode = kShared})) ==
        "conflict: 'x' is held by this owner already, as an exclusive lease (token 1); release "
        "it first");
  uint64_t s = h.openSession(5000);
  CHECK(why(h.acquire({.name = "x", .owner = "a", .wait = 100, .session = s})) ==
        "conflict: 'x' is held by this owner already, as an exclusive lease (token 1); release "
        "it first");
  CHECK(h.out.empty());
  CHECK(h.table.stats().reacquired == 1);
}

TEST_CASE("a newer acquire of a waiting owner takes over its place in the queue", "[lock_table]") {
  Harness h;
  h.acquire({.name = "x", .owner = "a"});                // c1 t1
  h.acquire({.name = "x", .owner = "b", .wait = 100});   // c2
  h.acquire({.name = "x", .owner = "c", .wait = 5000});  // c3
  h.now = 50;
  CHECK(why(h.acquire({.name = "x", .owner = "b", .ttl = 700, .wait = 5000})) == "");  // c4
  CHECK(h.events() == Lines{"rejected c2: superseded by a newer acquire of the same owner"});
  CHECK(h.out[0].failure->code == Fail::conflict);
  CHECK(h.out[0].lease.name == "x");
  CHECK(h.out[0].lease.owner == "b");
  CHECK(h.table.stats().waitersSuperseded == 1);
  CHECK(h.table.inspect("x", h.now)->waiters == 2);
  // c2's deadline (100) is gone with it: the new call waits till 5050.
  h.at(200);
  CHECK(h.out.empty());
  CHECK_FALSE(h.cancel(2));
  h.release("x", "a", 1);
  CHECK(h.events() == Lines{"released a t1", "granted c4 b t2"});
  CHECK(leaseOf(h, 4).expiresAt == 900);

  // A try-once acquire withdraws the owner's waiting call, then is refused:
  // nothing is granted to c later that it was told it did not get.
  CHECK(why(h.acquire({.name = "x", .owner = "c"})) == "conflict: 'x' is held by 'b' (token 2)");
  CHECK(h.events() == Lines{"rejected c3: superseded by a newer acquire of the same owner"});
  CHECK_FALSE(h.table.inspect("x", h.now)->waiters);
  h.release("x", "b", 2);
  CHECK(h.events() == Lines{"released b t2"});
  CHECK_FALSE(h.table.inspect("x", h.now));
}

TEST_CASE("a superseding acquire at the head with a mode that fits is granted at once",
          "[lock_table]") {
  Harness h;
  h.acquire({.name = "x", .owner = "r", .mode = kShared});                // c1 t1
  h.acquire({.name = "x", .owner = "w", .wait = 1000});                   // c2 waits: exclusive
  h.acquire({.name = "x", .owner = "w", .wait = 1000, .mode = kShared});  // c3
  CHECK(h.events() ==
        Lines{"rejected c2: superseded by a newer acquire of the same owner", "granted c3 w t2"});
  CHECK(h.table.stats().grantsAfterWait == 1);
}

// ---- waits that end ----

TEST_CASE("waiters that timed out or lost their session or were cancelled are never granted",
          "[lock_table]") {
  Harness h;
  uint64_t s = h.openSession(5000);                                    // t1
  h.acquire({.name = "x", .owner = "a"});                              // c1 t2
  h.acquire({.name = "x", .owner = "b", .wait = 100});                 // c2
  h.acquire({.name = "x", .owner = "c", .wait = 5000, .session = s});  // c3
  h.acquire({.name = "x", .owner = "d", .wait = 5000});                // c4
  h.acquire({.name = "x", .owner = "e", .wait = 5000});                // c5
  CHECK(h.cancel(4));
  CHECK(h.out.empty());
  CHECK_FALSE(h.cancel(4));
  h.at(100);
  CHECK(h.events() == Lines{"rejected c2: not granted within 100 ms"});
  h.out.clear();
  CHECK(std::get<uint32_t>(h.table.closeSession(s, h.now, h.out)) == 0);
  CHECK(h.events() == Lines{"rejected c3: session 1 closed", "closed s1"});
  h.release("x", "a", 2);
  CHECK(h.events() == Lines{"released a t2", "granted c5 e t3"});
  auto st = h.table.stats();
  CHECK(st.waitTimeouts == 1);
  CHECK(st.waitersDropped == 2);
  CHECK(st.waiters == 0);
}

TEST_CASE("a wait is cut to maxWait", "[lock_table]") {
  LockOptions o;
  o.maxWait = 300;
  Harness h(o);
  h.acquire({.name = "x", .owner = "a"});
  h.acquire({.name = "x", .owner = "b", .wait = 100'000});
  CHECK(h.table.nextDeadline() == 300);
  h.at(300);
  CHECK(h.events() == Lines{"rejected c2: not granted within 300 ms"});
}

TEST_CASE("when the head's wait runs out the waiters behind it may be granted", "[lock_table]") {
  Harness h;
  h.acquire({.name = "x", .owner = "r", .mode = kShared});                 // t1
  h.acquire({.name = "x", .owner = "w", .wait = 100});                     // c2
  h.acquire({.name = "x", .owner = "r2", .wait = 1000, .mode = kShared});  // c3
  h.acquire({.name = "x", .owner = "r3", .wait = 1000, .mode = kShared});  // c4
  h.at(100);
  CHECK(h.events() ==
        Lines{"rejected c2: not granted within 100 ms", "granted c3 r2 t2", "granted c4 r3 t3"});
}

TEST_CASE("cancelling the head lets the next waiter in", "[lock_table]") {
  Harness h;
  h.acquire({.name = "x", .owner = "r", .mode = kShared});                 // t1
  h.acquire({.name = "x", .owner = "w", .wait = 100});                     // c2
  h.acquire({.name = "x", .owner = "r2", .wait = 1000, .mode = kShared});  // c3
  CHECK(h.cancel(2));
  CHECK(h.events() == Lines{"granted c3 r2 t2"});
  // A cancelled waiter is not granted when the lock frees, and the lock is forgotten.
  h.acquire({.name = "y", .owner = "a"});                // t3
  h.acquire({.name = "y", .owner = "b", .wait = 1000});  // c5
  CHECK(h.cancel(5));
  h.release("y", "a", 3);
  CHECK(h.events() == Lines{"released a t3"});
  CHECK_FALSE(h.table.inspect("y", h.now));
}

// ---- expiry and lock-delay ----

TEST_CASE("leases expire in deadline order and free the lock for waiters", "[lock_table]") {
  Harness h;
  h.acquire({.name = "y", .owner = "a", .ttl = 300});   // t1, expires 300
  h.acquire({.name = "x", .owner = "b", .ttl = 200});   // t2, expires 200
  h.acquire({.name = "x", .owner = "c", .wait = 200});  // c3: deadline 200 = the expiry
  CHECK(h.table.nextDeadline() == 200);
  h.at(500);
  CHECK(h.events() == Lines{"expired b t2", "granted c3 c t3", "expired a t1"});
  // Granted while catching up, the lease runs from now.
  CHECK(leaseOf(h, 3).expiresAt == 500 + kTtl);
  CHECK(h.table.stats().expiries == 2);
}

TEST_CASE("at one instant an expiry goes before a wait that runs out", "[lock_table]") {
  Harness h;
  h.acquire({.name = "x", .owner = "a", .ttl = 100});   // t1, expires 100
  h.acquire({.name = "x", .owner = "b", .wait = 100});  // c2, deadline 100
  h.acquire({.name = "x", .owner = "c", .wait = 100});  // c3, deadline 100
  h.at(100);
  CHECK(h.events() ==
        Lines{"expired a t1", "granted c2 b t2", "rejected c3: not granted within 100 ms"});
}

TEST_CASE("after an expiry the lock grants nothing for lockDelay", "[lock_table]") {
  LockOptions o;
  o.lockDelay = 500;
  Harness h(o);
  h.acquire({.name = "x", .owner = "a", .ttl = 100});    // t1
  h.acquire({.name = "x", .owner = "b", .wait = 2000});  // c2
  h.at(100);
  CHECK(h.events() == Lines{"expired a t1"});
  auto view = h.table.inspect("x", h.now);
  REQUIRE(view);
  CHECK(view->holders.empty());
  CHECK(view->waiters == 1);
  CHECK(view->delayedUntil == 600);
  CHECK(h.table.nextDeadline() == 600);
  h.at(599);
  CHECK(h.out.empty());
  h.at(600);
  CHECK(h.events() == Lines{"granted c2 b t2"});
  CHECK(h.table.inspect("x", h.now)->delayedUntil == 0);

  // A release starts no delay.
  h.release("x", "b", 2);
  CHECK(why(h.acquire({.name = "x", .owner = "c"})) == "");

  // A delay alone keeps the name alive; then it is forgotten into the retained list.
  h.acquire({.name = "z", .owner = "a", .ttl = 100});  // t4 at 600, expires 700
  h.at(700);
  CHECK(h.table.inspect("z", h.now)->delayedUntil == 1200);
  CHECK(h.table.stats().locks == 2);
  h.at(1200);
  CHECK_FALSE(h.table.inspect("z", h.now));
  CHECK(h.table.validate("z", 4, h.now).current == 4);
}

TEST_CASE("inspect sees an expiry and its delay before advance runs", "[lock_table]") {
  LockOptions o;
  o.lockDelay = 300;
  Harness h(o);
  h.acquire({.name = "x", .owner = "a", .ttl = 100});
  auto view = h.table.inspect("x", 150);
  REQUIRE(view);
  CHECK(view->holders.empty());
  CHECK(view->delayedUntil == 400);
  CHECK_FALSE(h.table.inspect("x", 400));
  CHECK_FALSE(h.table.validate("x", 1, 100).valid);
  CHECK(h.table.validate("x", 1, 99).valid);
}

// ---- release and renew ----

TEST_CASE("release and renew refuse the wrong owner or token saying which", "[lock_table]") {
  Harness h;
  CHECK(why(h.release("x", "a", 1)) == "conflict: 'x' is not held");
  h.acquire({.name = "x", .owner = "alice"});  // t1
  CHECK(why(h.release("x", "alice", 7)) == "conflict: token 7 does not hold 'x' (held by token 1)");
  CHECK(why(h.release("x", "bob", 1)) == "conflict: token 1 of 'x' is held by 'alice', not 'bob'");
  CHECK(h.renew("x", "bob", 1) == "conflict: token 1 of 'x' is held by 'alice', not 'bob'");
  CHECK(h.renew("x", "alice", 7) == "conflict: token 7 does not hold 'x' (held by token 1)");
  CHECK(h.renew("x", "alice", 1, 5) == "invalidArgument: ttl_ms: 5 is below the minimum 10");
  CHECK(why(h.release("x y", "alice", 1)) ==
        "invalidArgument: name: character ' ' at position 1 is not one of [A-Za-z0-9._:@-]");
  CHECK(h.out.empty());

  h.acquire({.name = "r", .owner = "a", .mode = kShared});
  h.acquire({.name = "r", .owner = "b", .mode = kShared});
  h.acquire({.name = "r", .owner = "c", .mode = kShared});
  h.acquire({.name = "r", .owner = "d", .mode = kShared});
  h.acquire({.name = "r", .owner = "e", .mode = kShared});
  CHECK(why(h.release("r", "a", 1)) ==
        "conflict: token 1 does not hold 'r' (held by tokens 2, 3, 4 and 2 more)");
  CHECK(h.table.stats().releases == 0);
}

TEST_CASE("renew moves the expiry from now", "[lock_table]") {
  Harness h;
  h.acquire({.name = "x", .owner = "a", .ttl = 100});
  h.now = 80;
  CHECK(h.renew("x", "a", 1, 300) == "expires 380");
  CHECK(h.events() == Lines{"renewed a t1"});
  CHECK(h.out[0].lease.expiresAt == 380);
  CHECK(h.table.nextDeadline() == 380);
  h.at(379);
  CHECK(h.out.empty());
  h.at(380);
  CHECK(h.events() == Lines{"expired a t1"});
  CHECK(h.table.stats().renewals == 1);
}

TEST_CASE("a lease that ran out can be neither renewed nor released", "[lock_table]") {
  Harness h;
  h.acquire({.name = "x", .owner = "a", .ttl = 100});
  h.acquire({.name = "y", .owner = "a", .ttl = 100});
  h.now = 100;
  // Not yet advanced: the lease is still in the table, and said to have expired.
  CHECK(h.renew("x", "a", 1) == "conflict: lease of token 1 on 'x' expired");
  CHECK(h.events() == Lines{"expired a t1", "expired a t2"});
  CHECK(why(h.release("y", "a", 2)) == "conflict: 'y' is not held");
  // Advanced past it, and someone else holds it now.
  h.acquire({.name = "x", .owner = "b"});  // t3
  CHECK(h.renew("x", "a", 1) == "conflict: token 1 does not hold 'x' (held by token 3)");
  CHECK(h.table.stats().renewals == 0);
}

// ---- fencing tokens ----

TEST_CASE("fencing tokens let a resource refuse the writer whose lease ran out", "[lock_table]") {
  // The resource keeps the highest token it has seen and refuses lower ones.
  struct Resource {
    uint64_t highest = 0;
    std::vector<std::string> log;
    bool write(uint64_t token, std::string what) {
      if (token < highest) return false;
      highest = token;
      log.push_back(std::move(what));
      return true;
    }
  } storage;

  Harness h;
  h.acquire({.name = "orders", .owner = "A", .ttl = 100});
  uint64_t a = h.tokenOf(1);
  h.now = 250;  // A pauses (GC, network) past its TTL
  h.acquire({.name = "orders", .owner = "B", .ttl = 100});
  uint64_t b = h.tokenOf(2);
  CHECK(h.events() == Lines{"expired A t1", "granted c2 B t2"});
  CHECK(b > a);
  CHECK(storage.write(b, "B's write"));
  CHECK_FALSE(storage.write(a, "A's late write"));
  CHECK(storage.log == std::vector<std::string>{"B's write"});
  CHECK_FALSE(h.table.validate("orders", a, h.now).valid);
  CHECK(h.table.validate("orders", b, h.now).valid);
  CHECK(h.table.validate("orders", a, h.now).current == b);
}

TEST_CASE("tokens increase across names and sessions and recovery", "[lock_table]") {
  Harness h;
  h.acquire({.name = "x", .owner = "a"});
  uint64_t s = h.openSession(5000);
  h.acquire({.name = "y", .owner = "a"});
  h.acquire({.name = "x", .owner = "b", .wait = 100});
  h.release("x", "a", 1);
  CHECK(s == 2);
  CHECK(h.tokenOf(3) == 4);
  CHECK(h.table.nextToken() == 5);

  LockTable fresh;
  fresh.restoreTokens(1000);
  CHECK(fresh.nextToken() == 1000);
  CHECK(fresh.tokenLimit() == 1000);
  fresh.restoreTokens(10);  // never backwards
  CHECK(fresh.nextToken() == 1000);
  Events out;
  CHECK(std::holds_alternative<Queued>(
      fresh.acquire({.name = "x", .owner = "a", .ttl = 100}, 1, 0, out)));
  CHECK(out.empty());  // nothing may be issued before a reservation
  fresh.setTokenLimit(2000, 0, out);
  REQUIRE(out.size() == 1);
  CHECK(out[0].lease.token == 1000);
}

// ---- the token supply ----

TEST_CASE("grants wait for the token supply and resume in FIFO order", "[lock_table]") {
  LockOptions o;
  o.tokenLowWater = 3;
  Harness h(o, 3);  // tokens 1 and 2
  CHECK(h.table.tokensLow());
  h.acquire({.name = "x", .owner = "a"});  // t1
  h.acquire({.name = "y", .owner = "a"});  // t2
  CHECK(h.table.nextToken() == h.table.tokenLimit());
  // Try-once, held back only by the supply: it waits (at least 1 s).
  CHECK(why(h.acquire({.name = "z", .owner = "a"})) == "");  // c3
  CHECK(h.out.empty());
  CHECK(why(h.acquire({.name = "w", .owner = "b", .wait = 5000})) == "");  // c4
  CHECK(why(h.acquire({.name = "z", .owner = "b", .wait = 5000})) == "");  // c5
  h.release("x", "a", 1);
  CHECK(why(h.acquire({.name = "x", .owner = "c", .wait = 5000})) == "");  // c6
  CHECK(h.table.stats().tokenStalls == 3);
  auto sid = h.table.openSession(1000, h.now, h.out);
  REQUIRE(std::holds_alternative<Failure>(sid));
  CHECK(why(std::get<Failure>(sid)) == "unavailable: token supply being reserved; retry");

  h.setTokenLimit(2);  // not above the limit: ignored
  CHECK(h.out.empty());
  h.setTokenLimit(5);  // tokens 3 and 4
  CHECK(h.events() == Lines{"granted c3 a t3", "granted c4 b t4"});
  CHECK(h.table.stats().tokenStalls == 3);  // c5 waits for a, not for the supply
  h.setTokenLimit(100);
  CHECK(h.events() == Lines{"granted c6 c t5"});
  CHECK_FALSE(h.table.tokensLow());
  h.release("z", "a", 3);
  CHECK(h.events() == Lines{"released a t3", "granted c5 b t6"});
  CHECK(h.table.stats().grantsAfterWait == 4);
}

TEST_CASE("a try-once acquire held back by the supply waits a second at least", "[lock_table]") {
  Harness h(LockOptions{}, 1);
  CHECK(why(h.acquire({.name = "x", .owner = "a", .wait = 10})) == "");
  CHECK(h.table.nextDeadline() == 1000);
  h.at(1000);
  // Nothing held it: the answer says the supply, not the lock, was the obstacle.
  CHECK(h.events() ==
        Lines{"rejected c1: no fencing token could be reserved within 1000 ms; retry"});
  REQUIRE(h.out[0].failure);
  CHECK(h.out[0].failure->code == Fail::unavailable);
  CHECK_FALSE(h.table.inspect("x", h.now));
  CHECK(h.table.stats().locks == 0);
}

TEST_CASE("leases granted at once are bounded by maxHolders", "[lock_table]") {
  LockOptions o;
  o.maxHolders = 2;
  Harness h(o);
  h.acquire({.name = "a", .owner = "o"});
  h.acquire({.name = "b", .owner = "o", .mode = Mode::shared});
  CHECK(why(h.acquire({.name = "b", .owner = "p", .mode = Mode::shared}))
            .starts_with("resourceExhausted: 2 leases are held"));
  // An owner that holds it already gets it back: no new lease.
  CHECK(why(h.acquire({.name = "a", .owner = "o"})) == "");
  CHECK(h.table.stats().refusedFull == 1);
}

// ---- sessions ----

TEST_CASE("sessions clamp their timeout and stay open while they beat", "[lock_table]") {
  LockOptions o;
  o.minSessionTimeout = 1000;
  o.maxSessionTimeout = 10'000;
  Harness h(o);
  h.out.clear();
  auto opened = h.table.openSession(10, 0, h.out);
  CHECK(std::get<std::pair<uint64_t, Millis>>(opened) == std::pair<uint64_t, Millis>{1, 1000});
  CHECK(h.events() == Lines{"opened s1"});
  CHECK(h.out[0].sessionTimeout == 1000);
  CHECK(h.table.sessions() == std::vector<std::pair<uint64_t, Millis>>{{1, 1000}});
  uint64_t s2 = h.openSession(1'000'000);
  CHECK(h.out[0].sessionTimeout == 10'000);

  CHECK(std::get<Millis>(h.table.heartbeat(1, 900)) == 1000);
  h.at(1899);
  CHECK(h.out.empty());
  // Past its deadline a session cannot be revived, even before advance ends it.
  CHECK(why(std::get<Failure>(h.table.heartbeat(1, 1900))) == "notFound: session 1 is not open");
  h.at(1900);
  CHECK(h.events() == Lines{"closed s1"});
  CHECK(why(std::get<Failure>(h.table.heartbeat(1, 1901))) == "notFound: session 1 is not open");
  h.out.clear();
  CHECK(why(std::get<Failure>(h.table.closeSession(1, h.now, h.out))) ==
        "notFound: session 1 is not open");
  CHECK(std::get<uint32_t>(h.table.closeSession(s2, h.now, h.out)) == 0);
  auto st = h.table.stats();
  CHECK(st.sessionTimeouts == 1);
  CHECK(st.sessions == 0);
}

TEST_CASE("a session that times out loses its leases and drops its waiters", "[lock_table]") {
  LockOptions o;
  o.lockDelay = 100;
  Harness h(o);
  uint64_t s = h.openSession(1000);                                     // t1
  h.acquire({.name = "x", .owner = "a", .ttl = 60'000, .session = s});  // c1 t2
  h.acquire({.name = "y", .owner = "a", .ttl = 60'000, .session = s});  // c2 t3
  h.acquire({.name = "x", .owner = "b", .wait = 5000});                 // c3
  h.acquire({.name = "z", .owner = "c", .ttl = 60'000});                // c4 t4
  h.acquire({.name = "z", .owner = "a", .wait = 5000, .session = s});   // c5
  h.acquire({.name = "z", .owner = "d", .wait = 5000});                 // c6
  h.at(1000);
  CHECK(h.events() ==
        Lines{"rejected c5: session 1 timed out", "lost a t2", "lost a t3", "closed s1"});
  auto st = h.table.stats();
  CHECK(st.lost == 2);
  CHECK(st.sessionTimeouts == 1);
  CHECK(st.waitersDropped == 1);
  // Lost, like expired, starts the lock-delay.
  CHECK(h.table.inspect("x", h.now)->delayedUntil == 1100);
  h.at(1100);
  CHECK(h.events() == Lines{"granted c3 b t5"});
  h.release("z", "c", 4);
  CHECK(h.events() == Lines{"released c t4", "granted c6 d t6"});
}

TEST_CASE("closing a session releases its leases without lock-delay", "[lock_table]") {
  LockOptions o;
  o.lockDelay = 100;
  Harness h(o);
  uint64_t s = h.openSession(1000);                                       // t1
  h.acquire({.name = "x", .owner = "a", .session = s});                   // t2
  h.acquire({.name = "x", .owner = "b", .wait = 5000});                   // c2
  h.acquire({.name = "y", .owner = "a", .mode = kShared, .session = s});  // t3
  h.acquire({.name = "y", .owner = "c", .mode = kShared});                // t4
  h.out.clear();
  auto released = h.table.closeSession(s, h.now, h.out);
  CHECK(std::get<uint32_t>(released) == 2);
  CHECK(h.events() == Lines{"released a t2", "released a t3", "closed s1", "granted c2 b t5"});
  CHECK(h.table.stats().releases == 2);
  CHECK(h.table.inspect("y", h.now)->holders.size() == 1);
  CHECK_FALSE(h.table.validate("x", 2, h.now).valid);
}

TEST_CASE("a lease or waiter of a session past its deadline counts as gone", "[lock_table]") {
  Harness h;
  uint64_t s = h.openSession(1000);
  h.acquire({.name = "x", .owner = "a", .ttl = 60'000, .session = s});  // t2
  h.acquire({.name = "x", .owner = "b", .wait = 5000, .session = s});
  CHECK(h.table.validate("x", 2, 999).valid);
  CHECK_FALSE(h.table.validate("x", 2, 1000).valid);
  CHECK_FALSE(h.table.inspect("x", 1000));
  h.now = 1000;
  CHECK(h.renew("x", "a", 2) == "conflict: lease of token 2 on 'x' was lost: session 1 timed out");
}

// ---- bounds ----

TEST_CASE("the table refuses past its bounds and counts it", "[lock_table]") {
  LockOptions o;
  o.maxLocks = 2;
  o.maxWaiters = 3;
  o.maxWaitersPerLock = 2;
  o.maxSessions = 1;
  Harness h(o);
  h.acquire({.name = "a", .owner = "o"});
  h.acquire({.name = "b", .owner = "o"});
  CHECK(why(h.acquire({.name = "c", .owner = "o"})) ==
        "resourceExhausted: 2 locks are in use, the most the table holds");
  CHECK(why(h.acquire({.name = "a", .owner = "p", .wait = 100})) == "");
  CHECK(why(h.acquire({.name = "a", .owner = "q", .wait = 100})) == "");
  CHECK(why(h.acquire({.name = "a", .owner = "r", .wait = 100})) ==
        "resourceExhausted: 'a' has 2 waiters, the most one lock may have");
  CHECK(why(h.acquire({.name = "b", .owner = "p", .wait = 100})) == "");
  CHECK(why(h.acquire({.name = "b", .owner = "q", .wait = 100})) ==
        "resourceExhausted: 3 waiters over all locks, the most the table holds");
  // A superseding acquire adds no waiter, so it is not refused.
  CHECK(why(h.acquire({.name = "a", .owner = "q", .wait = 200})) == "");
  h.openSession(1000);
  h.out.clear();
  auto second = h.table.openSession(1000, h.now, h.out);
  CHECK(why(std::get<Failure>(second)) ==
        "resourceExhausted: 1 sessions are open, the most the table holds");
  CHECK(h.table.stats().refusedFull == 4);
}

TEST_CASE("freed names remember their last token up to retainNames with the oldest forgotten first",
          "[lock_table]") {
  LockOptions o;
  o.retainNames = 2;
  Harness h(o);
  for (const char* name : {"a", "b", "c"}) {
    h.acquire({.name = name, .owner = "o"});
    h.release(name, "o", h.table.nextToken() - 1);
  }
  CHECK(h.table.retained() == std::vector<std::pair<std::string, uint64_t>>{{"b", 2}, {"c", 3}});
  auto st = h.table.stats();
  CHECK(st.forgotten == 1);
  CHECK(st.retained == 2);
  CHECK(st.locks == 0);

  h.acquire({.name = "d", .owner = "o"});  // t4, held
  CHECK(h.table.validate("d", 4, h.now).valid);
  CHECK(h.table.validate("d", 4, h.now).current == 4);
  CHECK_FALSE(h.table.validate("c", 3, h.now).valid);  // freed, remembered
  CHECK(h.table.validate("c", 3, h.now).current == 3);
  CHECK(h.table.validate("a", 1, h.now).current == 0);  // forgotten
  CHECK_FALSE(h.table.validate("a", 1, h.now).valid);
  CHECK(h.table.validate("never", 1, h.now).current == 0);

  // A name that comes back leaves the list and keeps its last token.
  h.acquire({.name = "b", .owner = "o", .wait = 0});  // t5
  CHECK(h.table.retained() == std::vector<std::pair<std::string, uint64_t>>{{"c", 3}});
  h.acquire({.name = "b", .owner = "p", .wait = 100});
  CHECK(h.table.inspect("b", h.now)->lastToken == 5);
  h.cancel(h.lastCall);
  h.release("b", "o", 5);
  CHECK(h.table.retained() == std::vector<std::pair<std::string, uint64_t>>{{"c", 3}, {"b", 5}});
}

TEST_CASE("a lock queued on but never granted leaves nothing to retain", "[lock_table]") {
  Harness h(LockOptions{}, 1);
  h.acquire({.name = "x", .owner = "a", .wait = 10});
  h.at(5000);
  CHECK(h.table.retained().empty());
  CHECK(h.table.stats().locks == 0);
}

// ---- inspect ----

TEST_CASE("inspect shows holders in grant order and live waiters and the last token",
          "[lock_table]") {
  Harness h;
  CHECK_FALSE(h.table.inspect("x", 0));
  h.acquire({.name = "x", .owner = "a", .ttl = 100, .mode = kShared});  // t1
  h.acquire({.name = "x", .owner = "b", .ttl = 500, .mode = kShared});  // t2
  h.acquire({.name = "x", .owner = "c", .wait = 50});
  h.acquire({.name = "x", .owner = "d", .wait = 500});
  auto view = h.table.inspect("x", 0);
  REQUIRE(view);
  CHECK(view->name == "x");
  REQUIRE(view->holders.size() == 2);
  CHECK(view->holders[0].owner == "a");
  CHECK(view->holders[1].owner == "b");
  CHECK(view->holders[1].expiresAt == 500);
  CHECK(view->waiters == 2);
  CHECK(view->lastToken == 2);
  CHECK(view->permits == 0);
  CHECK(view->delayedUntil == 0);
  // Later, without advance: a's lease and c's wait are over.
  view = h.table.inspect("x", 100);
  REQUIRE(view);
  CHECK(view->holders.size() == 1);
  CHECK(view->waiters == 1);
}

// ---- recovery ----

TEST_CASE("a snapshot restored into a fresh table answers the same", "[lock_table]") {
  LockOptions o;
  o.retainNames = 10;
  Harness h(o);
  uint64_t s = h.openSession(3000);                                       // t1
  h.acquire({.name = "x", .owner = "a", .ttl = 5000});                    // t2
  h.acquire({.name = "r", .owner = "b", .mode = kShared, .session = s});  // t3
  h.acquire({.name = "r", .owner = "c", .ttl = 700, .mode = kShared});    // t4
  h.acquire({.name = "s", .owner = "d", .permits = 2});                   // t5
  h.acquire({.name = "gone", .owner = "e"});                              // t6
  h.release("gone", "e", 6);
  h.now = 100;

  LockTable fresh(o);
  for (auto& [id, timeout] : h.table.sessions()) fresh.restoreSession(id, timeout, h.now);
  for (auto& lease : h.table.leases()) fresh.restoreLease(lease);
  for (auto& [name, last] : h.table.retained()) fresh.restoreRetained(name, last);
  fresh.restoreTokens(h.table.nextToken());

  CHECK(fresh.nextToken() == 7);
  CHECK(fresh.tokenLimit() == 7);
  CHECK(fresh.sessions() == h.table.sessions());
  CHECK(fresh.retained() == h.table.retained());
  auto before = h.table.leases();
  auto after = fresh.leases();
  REQUIRE(after.size() == before.size());
  for (size_t i = 0; i < before.size(); ++i) {
    CHECK(after[i].name == before[i].name);
    CHECK(after[i].owner == before[i].owner);
    CHECK(after[i].token == before[i].token);
    CHECK(after[i].mode == before[i].mode);
    CHECK(after[i].permits == before[i].permits);
    CHECK(after[i].session == before[i].session);
    CHECK(after[i].expiresAt == before[i].expiresAt);
  }
  for (const char* name : {"x", "r", "s", "gone", "never"}) {
    auto a = h.table.inspect(name, h.now);
    auto b = fresh.inspect(name, h.now);
    REQUIRE(a.has_value() == b.has_value());
    if (a) {
      CHECK(b->holders.size() == a->holders.size());
      CHECK(b->lastToken == a->lastToken);
      CHECK(b->permits == a->permits);
      CHECK(b->waiters == 0);
    }
    for (uint64_t token = 1; token <= 7; ++token) {
      auto va = h.table.validate(name, token, h.now);
      auto vb = fresh.validate(name, token, h.now);
      CHECK(va.valid == vb.valid);
      CHECK(va.current == vb.current);
    }
  }
  // The restored table goes on as the old one would.
  Events out;
  CHECK(std::holds_alternative<Failure>(
      fresh.acquire({.name = "x", .owner = "z", .ttl = 100}, 1, h.now, out)));
  fresh.setTokenLimit(100, h.now, out);
  fresh.advance(800, out);
  CHECK(test::said(out) == Lines{"expired c t4"});
}

TEST_CASE("a restored lease already past its expiry expires on the next advance", "[lock_table]") {
  LockOptions o;
  o.lockDelay = 50;
  LockTable t(o);
  t.restoreLease({.name = "x", .owner = "a", .token = 9, .expiresAt = -20});
  CHECK(t.nextToken() == 10);
  CHECK(t.nextDeadline() == -20);
  Events out;
  t.advance(0, out);
  CHECK(test::said(out) == Lines{"expired a t9"});
  CHECK(t.inspect("x", 0)->delayedUntil == 30);
}

TEST_CASE("restore refuses state that cannot be", "[lock_table]") {
  auto refuses = [](auto&& restore, const char* text) {
    LockTable t;
    t.restoreSession(5, 1000, 0);
    t.restoreLease({.name = "x", .owner = "a", .token = 10, .expiresAt = 100});
    t.restoreLease({.name = "r", .owner = "a", .token = 11, .mode = kShared, .expiresAt = 100});
    t.restoreLease({.name = "s", .owner = "a", .token = 12, .permits = 1, .expiresAt = 100});
    try {
      restore(t);
      FAIL("no exception");
    } catch (const std::invalid_argument& e) {
      CHECK(std::string(e.what()) == text);
    }
  };
  refuses([](LockTable& t) { t.restoreLease({.name = "x", .owner = "b", .token = 20}); },
          "restoreLease: token 20 on 'x': an exclusive holder beside another holder");
  refuses(
      [](LockTable& t) {
        t.restoreLease({.name = "r", .owner = "b", .token = 20, .mode = Mode::exclusive});
      },
      "restoreLease: token 20 on 'r': an exclusive holder beside another holder");
  refuses(
      [](LockTable& t) { t.restoreLease({.name = "s", .owner = "b", .token = 20, .permits = 1}); },
      "restoreLease: token 20 on 's': more holders than its 1 permits");
  refuses(
      [](LockTable& t) { t.restoreLease({.name = "s", .owner = "b", .token = 20, .permits = 2}); },
      "restoreLease: token 20 on 's': permits 2, but the name has 1");
  refuses(
      [](LockTable& t) {
        t.restoreLease({.name = "r", .owner = "a", .token = 20, .mode = Mode::shared});
      },
      "restoreLease: token 20 on 'r': owner 'a' already holds it with token 11");
  refuses([](LockTable& t) { t.restoreLease({.name = "y", .owner = "a", .token = 10}); },
          "restoreLease: token 10 on 'y': the token is already in use");
  refuses([](LockTable& t) { t.restoreLease({.name = "y", .owner = "a", .token = 5}); },
          "restoreLease: token 5 on 'y': the token is already in use");
  refuses([](LockTable& t) { t.restoreLease({.name = "y", .owner = "a", .token = 0}); },
          "restoreLease: token 0 on 'y': token 0 is never issued");
  refuses([](LockTable& t) { t.restoreLease({.name = "y y", .owner = "a", .token = 20}); },
          "restoreLease: token 20 on 'y y': name: character ' ' at position 1 is not one of "
          "[A-Za-z0-9._:@-]");
  refuses([](LockTable& t) { t.restoreLease({.name = "y", .owner = "", .token = 20}); },
          "restoreLease: token 20 on 'y': owner: empty; give 1-128 printable ASCII characters");
  refuses(
      [](LockTable& t) { t.restoreLease({.name = "y", .owner = "a", .token = 20, .session = 6}); },
      "restoreLease: token 20 on 'y': session 6 is not restored");
  refuses(
      [](LockTable& t) {
        t.restoreLease(
            {.name = "y", .owner = "a", .token = 20, .mode = Mode::shared, .permits = 2});
      },
      "restoreLease: token 20 on 'y': a semaphore is never shared");
  refuses([](LockTable& t) { t.restoreSession(5, 1000, 0); },
          "restoreSession: session 5: restored twice");
  refuses([](LockTable& t) { t.restoreSession(10, 1000, 0); },
          "restoreSession: session 10: the id is a lease's token");
  refuses([](LockTable& t) { t.restoreSession(0, 1000, 0); },
          "restoreSession: session 0: id 0 is never issued");
  refuses([](LockTable& t) { t.restoreSession(30, 0, 0); },
          "restoreSession: session 30: timeout 0 is not positive");
  refuses([](LockTable& t) { t.restoreRetained("old", 0); },
          "restoreRetained: 'old': token 0 is never issued");
}

TEST_CASE("restoreRetained keeps the highest token per name and moves it to the newest",
          "[lock_table][restore]") {
  LockOptions o;
  o.retainNames = 2;
  LockTable t(o);
  t.restoreRetained("a", 5);
  t.restoreRetained("b", 6);
  t.restoreRetained("a", 3);  // named again (a log names it once per free): a is newest now
  t.restoreRetained("c", 7);  // b, the oldest, is forgotten
  CHECK(t.retained() == std::vector<std::pair<std::string, uint64_t>>{{"a", 5}, {"c", 7}});
  CHECK(t.validate("b", 6, 0).current == 0);
  // A live name takes a higher last token; a lower one changes nothing.
  t.restoreLease({.name = "x", .owner = "o", .token = 10, .expiresAt = 1000});
  t.restoreRetained("x", 12);
  t.restoreRetained("x", 11);
  CHECK(t.validate("x", 10, 0).current == 12);
  CHECK(t.lastTokens() == std::vector<std::pair<std::string, uint64_t>>{{"x", 12}});
  CHECK(t.nextToken() == 13);
}

// ---- odds and ends ----

TEST_CASE("nextDeadline is the earliest timer of any kind", "[lock_table]") {
  Harness h;
  CHECK_FALSE(h.table.nextDeadline());
  h.openSession(5000);  // deadline 5000
  CHECK(h.table.nextDeadline() == 5000);
  h.acquire({.name = "x", .owner = "a", .ttl = 3000});  // 3000
  CHECK(h.table.nextDeadline() == 3000);
  h.acquire({.name = "x", .owner = "b", .wait = 200});  // 200
  CHECK(h.table.nextDeadline() == 200);
  h.cancel(h.lastCall);
  CHECK(h.table.nextDeadline() == 3000);
}

TEST_CASE("thousands of waiters leave from the middle and the rest keep their order",
          "[lock_table]") {
  Harness h;
  h.acquire({.name = "x", .owner = "holder", .ttl = 100'000});  // t1
  const uint64_t n = 10'000;
  for (uint64_t i = 0; i < n; ++i)
    h.acquire({.name = "x", .owner = "w" + std::to_string(i), .wait = 60'000});  // c2..
  // Every odd waiter cancelled, from the back half first, then the front.
  for (uint64_t i = n - 1; i >= n / 2; --i)
    if (i % 2) CHECK(h.cancel(2 + i));
  for (uint64_t i = 1; i < n / 2; i += 2) CHECK(h.cancel(2 + i));
  CHECK(h.table.stats().waiters == n / 2);
  h.release("x", "holder", 1);
  uint64_t token = 1;
  for (uint64_t i = 0; i < n; i += 2) {
    REQUIRE(h.tokenOf(2 + i) == ++token);
    h.release("x", "w" + std::to_string(i), token);
  }
  CHECK(h.events() == Lines{"released w9998 t5001"});
  CHECK(h.table.stats().locks == 0);
}

TEST_CASE("a table can be moved with its state", "[lock_table]") {
  Harness h;
  h.acquire({.name = "x", .owner = "a"});
  h.acquire({.name = "x", .owner = "b", .wait = 500});
  LockTable moved = std::move(h.table);
  Events out;
  CHECK_FALSE(moved.release("x", "a", 1, 0, out));
  CHECK(test::said(out) == Lines{"released a t1", "granted c2 b t2"});
}

}  // namespace zmesh::lock
