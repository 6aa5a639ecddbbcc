// Events end to end (DESIGN.md §2, pub/sub): a real zmesh-broker, zmesh-testsvc
// publishing through it, rpc::Subscriber reading from it.
#include "zmesh/rpc/events.h"

#include <algorithm>
#include <catch2/catch.hpp>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

#include "crafted.h"
#include "process.h"
#include "testsvc.capnp.h"
#include "zmesh/client.h"
#include "zmesh/idl/idgen.capnp.h"

using namespace zmesh;
using namespace zmesh::testing;
using test::TestService;
namespace crafted = zmesh::testing::crafted;

namespace {

const uint64_t kTest = capnp::typeId<TestService>();
uint16_t method(const char* name) {
  return rpc::methodOrdinal(capnp::Schema::from<TestService>(), name);
}

// A broker on free ports, configured through a mesh file of its own.
struct Broker {
  explicit Broker(int hwm = 100000) {
    std::ofstream(config) << "[broker]\n"
                          << "xsub = \"" << xsub << "\"\n"
                          << "xpub = \"" << xpub << "\"\n"
                          << "admin = \"" << admin << "\"\n"
                          << "hwm = " << hwm << "\n";
    process.emplace(
        std::vector<std::string>{bin("zmesh-broker"), "--config", config, "--log-level", "warn"});
    REQUIRE(waitHealthy(admin));
  }
  TempDir dir;
  std::string config = dir.path() + "/mesh.toml";
  std::string xsub = tcpEndpoint(freePort());
  std::string xpub = tcpEndpoint(freePort());
  std::string admin = tcpEndpoint(freePort());
  std::optional<Process> process;
};

// zmesh-testsvc publishing to the broker; restartable on the same endpoint.
struct Publisher {
  explicit Publisher(const Broker& broker) : xsub(broker.xsub) { start(); }
  void start() {
    process.emplace(std::vector<std::string>{bin("zmesh-testsvc"), "--endpoint", endpoint,
                                             "--broker", xsub, "--log-level", "warn"});
    REQUIRE(waitHealthy(endpoint));
  }
  std::string xsub;
  std::string endpoint = tcpEndpoint(freePort());
  std::optional<Process> process;
};

void publish(const rpc::Channel& channel, const std::string& topic, uint32_t count) {
  capnp::MallocMessageBuilder m;
  auto p = m.initRoot<TestService::PublishParams>();
  p.setTopic(topic);
  p.setCount(count);
  rpc::CallOptions o;
  o.timeout = 8s;
  auto r = channel.callSync(kTest, method("publish"), rpc::toFrame(m), o);
  INFO(r.status.message);
  REQUIRE(r.status.ok());
}

uint32_t bodyN(rpc::ReceivedEvent& e) {
  auto ev = e.event();
  REQUIRE(ev.getBodyType() == capnp::typeId<test::TestEvent>());
  return ev.getBody().getAs<test::TestEvent>().getN();
}

bool isProbe(const std::string& topic) { return topic.ends_with(".probe"); }

// The ZeroMQ slow joiner: a subscription takes a moment to reach the publisher
// through the broker, and the publisher filters by the subscriptions it has. So
// for each subscriber, publish probes on a topic that only its own subscription
// matches (in the publisher's filter) until it has seen one. Probe topics end in
// ".probe"; next() skips them.
void waitSubscribed(const rpc::Channel& channel,
                    std::vector<std::pair<rpc::Subscriber*, std::string>> subscribers) {
  auto deadline = std::chrono::steady_clock::now() + 8s;
  for (auto& [sub, probeTopic] : subscribers) {
    REQUIRE(isProbe(probeTopic));
    bool seen = false;
    while (!seen) {
      REQUIRE(std::chrono::steady_clock::now() < deadline);
      publish(channel, probeTopic, 1);
      while (auto e = sub->receive(50ms)) {
        REQUIRE(isProbe(e->topic));  // nothing else is published yet
        seen = seen || e->topic == probeTopic;
      }
    }
  }
}

// The next event that is not a probe, or nullopt after `limit`.
std::optional<rpc::ReceivedEvent> next(rpc::Subscriber& sub, std::chrono::milliseconds limit = 3s) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (true) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return std::nullopt;
    auto e = sub.receive(left);
    if (!e) return std::nullopt;
    if (!isProbe(e->topic)) return e;
  }
}

std::map<std::string, int64_t> stats(const rpc::Channel& channel) {
  std::map<std::string, int64_t> out;
  for (auto& [name, value] : rpc::flatten(AdminClient(channel).stats()))
    out[name] = static_cast<int64_t>(value);
  return out;
}

}  // namespace

TEST_CASE("events arrive in order with sequences 1..n", "[events]") {
  Broker broker;
  Publisher pub(broker);
  zmq::context_t context;
  rpc::ClientThread client(context);
  auto channel = client.channel(pub.endpoint);
  rpc::Subscriber sub(context, broker.xpub, {"test.seq"});
  waitSubscribed(channel, {{&sub, "test.seq.probe"}});

  constexpr uint32_t kBatch = 400, kBatches = 3;
  for (uint32_t b = 0; b < kBatches; ++b) publish(channel, "test.seq", kBatch);
  std::optional<uint64_t> incarnation;
  for (uint64_t i = 1; i <= kBatch * kBatches; ++i) {
    auto e = next(sub);
    REQUIRE(e);
    auto ev = e->event();
    REQUIRE(e->topic == "test.seq");
    REQUIRE(ev.getSequence() == i);
    REQUIRE(e->missed == 0);
    CHECK(bodyN(*e) == (i - 1) % kBatch + 1);
    CHECK(std::string(ev.getTopic().cStr()) == "test.seq");
    CHECK(std::string(ev.getPublisher().cStr()) == "testsvc@" + pub.endpoint);
    if (!incarnation) incarnation = ev.getIncarnation();
    CHECK(ev.getIncarnation() == *incarnation);
    CHECK(ev.getWallTimeMs() > 0);
  }
  CHECK_FALSE(next(sub, 200ms));
  CHECK(sub.gaps() == 0);
  CHECK(sub.malformed() == 0);

  // The publisher and the broker count what went through.
  auto s = stats(channel);
  CHECK(s["events.published"] >= kBatch * kBatches);
  rpc::ClientThread adminClient(context);
  auto b = stats(adminClient.channel(broker.admin));
  // Probes sent before the subscription reached the publisher never left it.
  CHECK(b["broker.messages{topic_prefix=test}"] <= s["events.published"]);
  CHECK(b["broker.messages{topic_prefix=test}"] >= kBatch * kBatches + 1);
  CHECK(b["broker.subscriptions"] >= 1);
}

TEST_CASE("a subscriber to one topic sees no false gap while others interleave", "[events]") {
  Broker broker;
  Publisher pub(broker);
  zmq::context_t context;
  rpc::ClientThread client(context);
  auto channel = client.channel(pub.endpoint);
  rpc::Subscriber onlyA(context, broker.xpub, {"test.a"});
  rpc::Subscriber both(context, broker.xpub, {"test."});
  // "test.probe" reaches only `both`: its own subscription, not onlyA's, must let it through.
  waitSubscribed(channel, {{&onlyA, "test.a.probe"}, {&both, "test.probe"}});

  constexpr uint32_t kBlock = 10, kRounds = 50;
  for (uint32_t r = 0; r < kRounds; ++r) {
    publish(channel, "test.a", kBlock);
    publish(channel, "test.b", kBlock);
  }
  // test.a alone: 1..500 without a gap, although the publisher sent 1000 in between.
  for (uint64_t i = 1; i <= kBlock * kRounds; ++i) {
    auto e = next(onlyA);
    REQUIRE(e);
    REQUIRE(e->topic == "test.a");
    REQUIRE(e->event().getSequence() == i);
    REQUIRE(e->missed == 0);
  }
  CHECK_FALSE(next(onlyA, 200ms));
  CHECK(onlyA.gaps() == 0);

  // Both topics: each its own sequence, blocks in publishing order.
  std::map<std::string, uint64_t> last;
  for (uint32_t i = 0; i < 2 * kBlock * kRounds; ++i) {
    auto e = next(both);
    REQUIRE(e);
    std::string expected = (i / kBlock) % 2 == 0 ? "test.a" : "test.b";
    REQUIRE(e->topic == expected);
    REQUIRE(e->event().getSequence() == ++last[e->topic]);
    REQUIRE(e->missed == 0);
  }
  CHECK(last["test.a"] == kBlock * kRounds);
  CHECK(last["test.b"] == kBlock * kRounds);
  CHECK(both.gaps() == 0);
}

TEST_CASE("a restarted publisher is a new stream, not a gap", "[events]") {
  Broker broker;
  Publisher pub(broker);
  zmq::context_t context;
  rpc::ClientThread client(context);
  auto channel = client.channel(pub.endpoint);
  rpc::Subscriber sub(context, broker.xpub, {"test.r"});
  waitSubscribed(channel, {{&sub, "test.r.probe"}});

  publish(channel, "test.r", 30);
  uint64_t firstIncarnation = 0;
  for (uint64_t i = 1; i <= 30; ++i) {
    auto e = next(sub);
    REQUIRE(e);
    REQUIRE(e->event().getSequence() == i);
    firstIncarnation = e->event().getIncarnation();
  }

  pub.process->kill9();
  pub.start();  // same endpoint, so the same publisher id
  waitSubscribed(channel, {{&sub, "test.r.probe"}});
  publish(channel, "test.r", 10);
  for (uint64_t i = 1; i <= 10; ++i) {
    auto e = next(sub);
    REQUIRE(e);
    auto ev = e->event();
    CHECK(std::string(ev.getPublisher().cStr()) == "testsvc@" + pub.endpoint);
    CHECK(ev.getIncarnation() != firstIncarnation);
    REQUIRE(ev.getSequence() == i);  // starts again at 1
    REQUIRE(e->missed == 0);
  }
  CHECK(sub.gaps() == 0);

  // The second incarnation goes on past the first one's last number without a gap either.
  publish(channel, "test.r", 40);
  for (uint64_t i = 11; i <= 50; ++i) {
    auto e = next(sub);
    REQUIRE(e);
    REQUIRE(e->event().getSequence() == i);
    REQUIRE(e->missed == 0);
  }
  CHECK(sub.gaps() == 0);
}

TEST_CASE("events dropped at a high-water mark are reported as a gap", "[events]") {
  // The broker's own per-subscriber queue is small too, so the drops happen
  // there or at the subscriber: either way the sequence numbers show them.
  Broker broker(1000);
  Publisher pub(broker);
  zmq::context_t context;
  rpc::ClientThread client(context);
  auto channel = client.channel(pub.endpoint);
  rpc::ClientThread adminClient(context);
  auto brokerAdmin = adminClient.channel(broker.admin);
  rpc::Subscriber sub(context, broker.xpub, {"test.gap"}, 10);
  waitSubscribed(channel, {{&sub, "test.gap.probe"}});
  auto before = stats(brokerAdmin)["broker.messages{topic_prefix=test}"];

  // The subscriber does not read while the burst goes through the broker.
  constexpr uint32_t kBurst = 50000;
  publish(channel, "test.gap", kBurst);
  auto deadline = std::chrono::steady_clock::now() + 8s;
  while (stats(brokerAdmin)["broker.messages{topic_prefix=test}"] < before + kBurst) {
    REQUIRE(std::chrono::steady_clock::now() < deadline);
    std::this_thread::sleep_for(20ms);
  }

  // Now read everything, then one more event so a loss at the very end shows too.
  uint64_t received = 0, missed = 0, lastSeq = 0;
  bool first = true;
  auto take = [&](rpc::ReceivedEvent& e) {
    REQUIRE(e.topic == "test.gap");
    auto seq = e.event().getSequence();
    if (first) CHECK(seq == 1);  // the queue was empty when the burst began
    first = false;
    REQUIRE(seq > lastSeq);  // in order, never twice
    lastSeq = seq;
    ++received;
    missed += e.missed;
  };
  while (auto e = next(sub, 500ms)) take(*e);
  publish(channel, "test.gap", 1);
  while (lastSeq < kBurst + 1) {
    auto e = next(sub, 3s);
    REQUIRE(e);
    take(*e);
  }
  INFO("received " << received << ", reported missing " << missed);
  CHECK(lastSeq == kBurst + 1);
  CHECK(received < kBurst + 1);
  CHECK(missed > 0);
  CHECK(sub.gaps() > 0);
  // Every event is either received or reported missing.
  CHECK(received + missed == kBurst + 1);
}

// ---- a hostile publisher ----

TEST_CASE("a hostile publisher cannot stop a subscriber, nor the client's event thread",
          "[events][crafted]") {
  Broker broker;
  zmq::context_t context;
  rpc::Subscriber sub(context, broker.xpub, {"hostile."});
  Mesh mesh(rpc::MeshConfig::parse("[broker]\nxpub = \"" + broker.xpub + "\"\n", "test"));
  std::mutex mutex;
  std::vector<Event> seen;
  auto subscription = mesh.events().subscribe("hostile.", [&](const Event& e) {
    std::lock_guard lock(mutex);
    seen.push_back(e);
    if (e.topic == "hostile.throw") throw std::runtime_error("a callback's own bug");
  });
  crafted::RawPublisher pub(context, broker.xsub);
  // Until both subscriptions reached the raw publisher through the broker.
  uint64_t probes = 0;
  auto deadline = std::chrono::steady_clock::now() + 8s;
  for (bool subscribed = false, ready = false; !ready;) {
    REQUIRE(std::chrono::steady_clock::now() < deadline);
    pub.send("hostile.probe", crafted::eventOf("hostile.probe", ++probes));
    while (sub.receive(50ms)) subscribed = true;
    std::lock_guard lock(mutex);
    ready = subscribed && !seen.empty();
  }

  pub.send("hostile.x", crafted::frame(crafted::listAsRoot()));
  {
    capnp::MallocMessageBuilder m;
    auto e = m.initRoot<idl::Event>();
    e.setPublisher("hostile@test");
    e.setTopic("hostile.x");
    pub.send("hostile.x", crafted::frame(crafted::damaged(m, 0, crafted::Damage::kStructPointer)));
  }
  pub.send("hostile.x",
           crafted::eventOf("hostile.elsewhere", 1));  // topic field differs from the frame
  crafted::Damage bodyDamage = crafted::Damage::kStructPointer;
  pub.send("hostile.body",
           crafted::eventOf("hostile.body", 1, &bodyDamage));  // envelope fine, body not
  pub.send("hostile.throw", crafted::eventOf("hostile.throw", 1));
  pub.send("hostile.after", crafted::eventOf("hostile.after", 1));

  // The subscriber drops the three bad envelopes and goes on.
  std::vector<std::string> topics;
  while (auto e = sub.receive(1s)) {
    if (e->topic != "hostile.probe") topics.push_back(e->topic);
    if (e->topic == "hostile.after") break;
  }
  CHECK(topics == std::vector<std::string>{"hostile.body", "hostile.throw", "hostile.after"});
  CHECK(sub.malformed() == 3);

  // The client's thread also drops the bad body, survives the throwing callback.
  auto until = std::chrono::steady_clock::now() + 5s;
  std::unique_lock lock(mutex);
  while (seen.back().topic != "hostile.after") {
    REQUIRE(std::chrono::steady_clock::now() < until);
    lock.unlock();
    std::this_thread::sleep_for(10ms);
    lock.lock();
  }
  for (auto& e : seen) CHECK(e.topic != "hostile.body");
  REQUIRE(broker.process->running());
}
