// rpc::MetricsOut, flatten, prometheusName and the wire form of Admin.stats.
#include "zmesh/rpc/metrics.h"

#include <capnp/message.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "zmesh/rpc/metrics_wire.h"

using namespace zmesh;
using rpc::MetricKind;
using rpc::MetricsOut;

namespace {

const rpc::MetricFamily* find(const std::vector<rpc::MetricFamily>& families,
                              const std::string& name) {
  for (auto& f : families)
    if (f.name == name) return &f;
  return nullptr;
}

}  // namespace

TEST_CASE("counters and gauges are declared with their kind and help", "[metrics]") {
  MetricsOut out;
  out.counter("cache.hits", "Reads that found their key", 7);
  out.gauge("cache.keys", "Keys held now", 3);
  auto families = out.take();
  REQUIRE(families.size() == 2);
  CHECK(families[0].name == "cache.hits");
  CHECK(families[0].kind == MetricKind::kCounter);
  CHECK(families[0].help == "Reads that found their key");
  CHECK(families[0].labelNames.empty());
  REQUIRE(families[0].samples.size() == 1);
  CHECK(families[0].samples[0].value == 7);
  CHECK(families[1].kind == MetricKind::kGauge);
  CHECK(families[1].samples[0].value == 3);
  CHECK(find(families, "metrics.series_folded") == nullptr);  // nothing folded
}

TEST_CASE("a second declaration that agrees adds to the first", "[metrics]") {
  MetricsOut out;
  out.counter("journal.appends", "Records written", 2);
  out.counter("journal.appends", "Records written", 3);
  auto f = out.family("rpc.server.calls", MetricKind::kCounter, "Calls", {"method", "code"});
  f.sample({"A.x", "ok"}, 1);
  auto again = out.family("rpc.server.calls", MetricKind::kCounter, "Calls", {"method", "code"});
  again.sample({"A.x", "ok"}, 4);
  again.sample({"A.x", "not_found"}, 1);
  auto families = out.take();
  REQUIRE(families.size() == 2);
  CHECK(families[0].samples.at(0).value == 5);
  REQUIRE(families[1].samples.size() == 2);
  CHECK(families[1].samples[0].value == 5);
}

TEST_CASE("a second declaration that disagrees is refused", "[metrics]") {
  MetricsOut out;
  out.counter("a.b", "help", 1);
  CHECK_THROWS_AS(out.gauge("a.b", "help", 1), std::logic_error);
  CHECK_THROWS_AS(out.counter("a.b", "other help", 1), std::logic_error);
  CHECK_THROWS_AS(out.family("a.b", MetricKind::kCounter, "help", {"x"}), std::logic_error);
  out.family("h.d", MetricKind::kHistogram, "h", {}, {1, 2});
  CHECK_THROWS_AS(out.family("h.d", MetricKind::kHistogram, "h", {}, {1, 3}), std::logic_error);
}

TEST_CASE("names outside a-z 0-9 _ . and unsorted bounds are refused", "[metrics]") {
  MetricsOut out;
  CHECK_THROWS_AS(out.counter("Cache.hits", "h", 1), std::logic_error);
  CHECK_THROWS_AS(out.counter("cache-hits", "h", 1), std::logic_error);
  CHECK_THROWS_AS(out.counter("", "h", 1), std::logic_error);
  CHECK_THROWS_AS(out.family("x.y", MetricKind::kHistogram, "h", {}, {2, 1}), std::logic_error);
}

TEST_CASE("label values must match the label names in number", "[metrics]") {
  MetricsOut out;
  auto f = out.family("broker.messages", MetricKind::kCounter, "h", {"topic_prefix"});
  CHECK_THROWS_AS(f.sample({}, 1), std::invalid_argument);
  CHECK_THROWS_AS(f.sample({"a", "b"}, 1), std::invalid_argument);
  CHECK_NOTHROW(f.sample({"a"}, 1));
  auto plain = out.family("x.total", MetricKind::kCounter, "h", {});
  CHECK_THROWS_AS(plain.sample({"a"}, 1), std::invalid_argument);
}

TEST_CASE("series past the cap fold into _other and are counted", "[metrics]") {
  MetricsOut out(5);  // four label sets and the _other one
  auto f = out.family("ratelimit.rule.decisions", MetricKind::kCounter, "h", {"rule"});
  for (int i = 0; i < 10; ++i) f.sample({"r" + std::to_string(i)}, i + 1);
  f.sample({"r0"}, 100);             // a known series still adds to itself
  out.counter("plain.one", "h", 1);  // an unlabelled family is never capped
  auto families = out.take();
  auto* rules = find(families, "ratelimit.rule.decisions");
  REQUIRE(rules != nullptr);
  CHECK(rules->samples.size() == 5);
  auto flat = rpc::flatten(families);
  CHECK(flat["ratelimit.rule.decisions{rule=r0}"] == 101);
  CHECK(flat["ratelimit.rule.decisions{rule=r3}"] == 4);
  CHECK(flat.count("ratelimit.rule.decisions{rule=r4}") == 0);
  CHECK(flat["ratelimit.rule.decisions{rule=_other}"] == 5 + 6 + 7 + 8 + 9 + 10);
  auto* folded = find(families, "metrics.series_folded");
  REQUIRE(folded != nullptr);
  CHECK(folded->kind == MetricKind::kGauge);  // of this collection: it may go down
  CHECK(flat["metrics.series_folded"] == 6);
}

TEST_CASE("a family of closed label sets is never folded", "[metrics]") {
  MetricsOut out(5);
  auto f = out.family("rpc.server.calls", MetricKind::kCounter, "h", {"method", "code"}, {},
                      MetricsOut::kClosedSet);
  for (int i = 0; i < 300; ++i) f.sample({"M.m" + std::to_string(i), "ok"}, 1);
  auto families = out.take();
  CHECK(families.at(0).samples.size() == 300);
  CHECK(find(families, "metrics.series_folded") == nullptr);
}

TEST_CASE("reserved repeated or invalid label names are refused at declaration", "[metrics]") {
  MetricsOut out;
  for (auto label : {"service", "le", "quantile", "__x", "9a", "a-b", ""})
    CHECK_THROWS_WITH(out.family("a.b", MetricKind::kCounter, "h", {label}),
                      Catch::Contains(std::string("'") + label + "'"));
  CHECK_THROWS_WITH(out.family("a.b", MetricKind::kCounter, "h", {"x", "x"}),
                    Catch::Contains("twice"));
  CHECK_THROWS_WITH(out.family("h.x", MetricKind::kHistogram, "h", {}, {1, 1}),
                    Catch::Contains("strictly ascending"));
  CHECK_THROWS_WITH(out.family("h.x", MetricKind::kHistogram, "h", {}, {1, INFINITY}),
                    Catch::Contains("finite"));
  CHECK_THROWS_WITH(out.family("g.x", MetricKind::kGauge, "h", {}, {1}),
                    Catch::Contains("bounds on a gauge"));
  CHECK(out.take().empty());
}

TEST_CASE("adding the wrong kind of sample leaves no series behind", "[metrics]") {
  MetricsOut out;
  auto h = out.family("h.x", MetricKind::kHistogram, "h", {"m"}, {1});
  CHECK_THROWS_AS(h.sample({"a"}, 1), std::logic_error);
  auto c = out.family("c.x", MetricKind::kCounter, "h", {"m"});
  uint64_t one[] = {1};
  CHECK_THROWS_AS(c.histogram({"a"}, one, 1, 0.5), std::logic_error);
  auto families = out.take();
  CHECK(families.at(0).samples.empty());
  CHECK(families.at(1).samples.empty());
}

TEST_CASE("histogram samples add bucket by bucket with their count and sum", "[metrics]") {
  MetricsOut out;
  auto h =
      out.family("rpc.server.duration_seconds", MetricKind::kHistogram, "h", {"method"}, {0.1, 1});
  uint64_t first[] = {1, 3};
  uint64_t second[] = {2, 2};
  h.histogram({"A.x"}, first, 4, 2.5);
  h.histogram({"A.x"}, second, 2, 0.25);
  h.histogram({"A.y"}, second, 3, 9);
  CHECK_THROWS_AS(h.sample({"A.x"}, 1), std::logic_error);
  auto families = out.take();
  auto& s = families.at(0).samples.at(0);
  CHECK(s.buckets == std::vector<uint64_t>{3, 5});
  CHECK(s.value == 6);
  CHECK(s.sum == 2.75);
  auto flat = rpc::flatten(families);
  CHECK(flat["rpc.server.duration_seconds_count{method=A.x}"] == 6);
  CHECK(flat["rpc.server.duration_seconds_sum{method=A.x}"] == 2.75);
  CHECK(flat["rpc.server.duration_seconds_count{method=A.y}"] == 3);
}

TEST_CASE("flatten names unlabelled and labelled samples", "[metrics]") {
  MetricsOut out;
  out.gauge("cache.keys", "h", 2);
  auto f = out.family("rpc.server.calls", MetricKind::kCounter, "h", {"method", "code"});
  f.sample({"IdGen.next", "ok"}, 12);
  auto flat = rpc::flatten(out.take());
  CHECK(flat.size() == 2);
  CHECK(flat["cache.keys"] == 2);
  CHECK(flat["rpc.server.calls{method=IdGen.next,code=ok}"] == 12);
}

TEST_CASE("prometheusName prefixes zmesh_ and ends a counter in _total", "[metrics]") {
  rpc::MetricFamily f;
  f.name = "rpc.server.calls";
  f.kind = MetricKind::kCounter;
  CHECK(rpc::prometheusName(f) == "zmesh_rpc_server_calls_total");
  f.name = "cache.keys";
  f.kind = MetricKind::kGauge;
  CHECK(rpc::prometheusName(f) == "zmesh_cache_keys");
  f.name = "rpc.server.duration_seconds";
  f.kind = MetricKind::kHistogram;
  CHECK(rpc::prometheusName(f) == "zmesh_rpc_server_duration_seconds");
}

TEST_CASE("families survive the wire unchanged", "[metrics]") {
  MetricsOut out;
  out.counter("a.count", "A count", 3);
  out.gauge("a.level", "A level", -1.5);
  auto h = out.family("a.seconds", MetricKind::kHistogram, "Seconds", {"method"}, {0.5, 1});
  uint64_t cumulative[] = {1, 2};
  h.histogram({"X.y"}, cumulative, 3, 4.25);
  auto families = out.take();

  capnp::MallocMessageBuilder message;
  rpc::writeFamilies(families, message.initRoot<idl::Admin::StatsResults>());
  auto back = rpc::readFamilies(message.getRoot<idl::Admin::StatsResults>().asReader());
  REQUIRE(back.size() == families.size());
  for (size_t i = 0; i < back.size(); ++i) {
    INFO(families[i].name);
    CHECK(back[i].name == families[i].name);
    CHECK(back[i].kind == families[i].kind);
    CHECK(back[i].help == families[i].help);
    CHECK(back[i].labelNames == families[i].labelNames);
    CHECK(back[i].bounds == families[i].bounds);
    REQUIRE(back[i].samples.size() == families[i].samples.size());
    for (size_t j = 0; j < back[i].samples.size(); ++j) {
      CHECK(back[i].samples[j].labelValues == families[i].samples[j].labelValues);
      CHECK(back[i].samples[j].value == families[i].samples[j].value);
      CHECK(back[i].samples[j].buckets == families[i].samples[j].buckets);
      CHECK(back[i].samples[j].sum == families[i].samples[j].sum);
    }
  }
}

TEST_CASE("a registry collects every source into one set of families", "[metrics]") {
  rpc::StatsRegistry registry;
  registry.add([](MetricsOut& out) { out.counter("x.a", "h", 1); });
  registry.add([](MetricsOut& out) { out.counter("x.a", "h", 2); });
  auto flat = rpc::flatten(registry.collect());
  CHECK(flat["x.a"] == 3);
  CHECK(rpc::flatten(registry.collect())["x.a"] == 3);  // a fresh collection each time
}
