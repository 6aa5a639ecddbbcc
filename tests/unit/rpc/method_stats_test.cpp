// The server's per-method statistics: bucket edges as Prometheus' le reads
// them, codes by name, and what Admin.stats makes of them.
#include "method_stats.h"

#include <catch2/catch.hpp>

using namespace zmesh::rpc;

TEST_CASE("a duration equal to a bound falls in that bound's bucket", "[metrics]") {
  REQUIRE(MethodStats::kBoundsNs.front() == 50'000);
  REQUIRE(MethodStats::kBoundsNs.back() == 10'000'000'000);
  for (size_t b = 0; b < kDurationBuckets; ++b) {
    MethodStats m;
    m.record(StatusCode::OK, MethodStats::kBoundsNs[b]);
    m.record(StatusCode::OK, MethodStats::kBoundsNs[b] + 1);
    CHECK(m.buckets[b] == 1);
    CHECK(m.buckets[b + 1] == 1);
  }
  MethodStats m;
  m.record(StatusCode::OK, -5);  // a clock step back counts as zero
  CHECK(m.buckets[0] == 1);
  CHECK(m.sumNs == 0);
}

TEST_CASE("collected method statistics are cumulative and named by code", "[metrics]") {
  std::vector<MethodStats> methods(3);
  methods[0].name = "_unknown";
  methods[1].name = "IdGen.next";
  methods[2].name = "Admin.stats";                           // never called: not listed
  methods[1].record(StatusCode::OK, 10'000);                 // first bucket
  methods[1].record(StatusCode::OK, 300'000);                // 0.0005
  methods[1].record(StatusCode::NOT_FOUND, 20'000'000'000);  // +Inf
  methods[0].record(StatusCode::UNIMPLEMENTED, 1);
  MetricsOut out;
  collectMethodStats(methods, out);
  auto flat = flatten(out.take());
  CHECK(flat.at("rpc.server.calls{method=IdGen.next,code=ok}") == 2);
  CHECK(flat.at("rpc.server.calls{method=IdGen.next,code=not_found}") == 1);
  CHECK(flat.at("rpc.server.calls{method=_unknown,code=unimplemented}") == 1);
  CHECK(flat.at("rpc.server.duration_seconds_count{method=IdGen.next}") == 3);
  CHECK(flat.at("rpc.server.duration_seconds_sum{method=IdGen.next}") ==
        Approx(20.00031).epsilon(1e-9));
  CHECK(flat.count("rpc.server.duration_seconds_count{method=Admin.stats}") == 0);

  MetricsOut again;
  collectMethodStats(methods, again);
  auto families = again.take();
  const MetricFamily& h = families.at(1);
  REQUIRE(h.name == "rpc.server.duration_seconds");
  const MetricSample& s = h.samples.at(1);  // IdGen.next, after _unknown
  REQUIRE(s.labelValues == std::vector<std::string>{"IdGen.next"});
  CHECK(s.buckets.front() == 1);
  CHECK(s.buckets[3] == 2);      // le=0.0005
  CHECK(s.buckets.back() == 2);  // le=10: the 20 s call only in +Inf
  CHECK(s.value == 3);
}
