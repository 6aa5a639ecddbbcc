// Typed statistics a process exposes through Admin.stats: each is declared
// where it lives, with its kind, help text and label names, when Admin.stats
// is collected. The gateway renders them as Prometheus families.
#pragma once

#include <concepts>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace zmesh::rpc {

enum class MetricKind : uint8_t { kCounter, kGauge, kHistogram };

struct MetricSample {
  std::vector<std::string> labelValues;  // one per the family's labelNames
  double value = 0;                      // counter or gauge; a histogram's count
  std::vector<uint64_t> buckets;         // histogram: cumulative, one per bound
  double sum = 0;                        // histogram
};

struct MetricFamily {
  std::string name;  // "<area>.<what>", [a-z0-9_.]: "rpc.server.calls"
  MetricKind kind = MetricKind::kCounter;
  std::string help;
  std::vector<std::string> labelNames;
  std::vector<double> bounds;  // histogram: upper bounds, ascending (+Inf implied)
  std::vector<MetricSample> samples;
};

// "zmesh_" + name with '.' as '_', "_total" appended for a counter.
std::string prometheusName(const MetricFamily& family);
// "counter", "gauge", "histogram": the exposition format's TYPE words.
std::string_view kindName(MetricKind kind);
// Why the family cannot be rendered as Prometheus beside a "service" label, or
// nullopt: its name is not [a-z0-9_.]+, a label name is invalid, reserved
// (service, le, quantile) or repeated, or a histogram's bounds are not finite
// and strictly ascending. MetricsOut refuses such a declaration; the gateway
// drops such a family read from another process.
std::optional<std::string> familyError(const MetricFamily& family);

// What a statistics source writes into while Admin.stats is collected.
// A family is declared once per collection (a second declaration of the same
// name adds to the first; its kind, help, label names and cap must agree, or
// std::logic_error); a family with label names keeps at most maxSeries label
// sets: the samples past it fold, summed, into one whose every label value is
// "_other" (how many folded is the gauge "metrics.series_folded").
class MetricsOut {
 public:
  static constexpr size_t kDefaultMaxSeries = 100;
  // For labels whose values come from closed sets (methods × status codes):
  // folding would only blur what is already bounded.
  static constexpr size_t kClosedSet = std::numeric_limits<size_t>::max();
  static constexpr std::string_view kOther = "_other";

  // maxSeries: the cap of a family declared without one of its own.
  explicit MetricsOut(size_t maxSeries = kDefaultMaxSeries) : maxSeries_(maxSeries) {}

  void counter(std::string_view name, std::string_view help, double value);
  void gauge(std::string_view name, std::string_view help, double value);
  // Counts and sizes as they are kept (uint64_t, size_t, …).
  template <std::integral T>
  void counter(std::string_view name, std::string_view help, T value) {
    counter(name, help, static_cast<double>(value));
  }
  template <std::integral T>
  void gauge(std::string_view name, std::string_view help, T value) {
    gauge(name, help, static_cast<double>(value));
  }

  // A labelled family; add its samples with sample().
  class Family {
   public:
    // labelValues: one per label name, in order (std::invalid_argument otherwise).
    void sample(std::initializer_list<std::string_view> labelValues, double value);
    void sample(const std::vector<std::string>& labelValues, double value);
    // Histogram: cumulative bucket counts, one per bound; count = observations.
    void histogram(const std::vector<std::string>& labelValues, const uint64_t* cumulative,
                   uint64_t count, double sum);

   private:
    friend class MetricsOut;
    Family(MetricsOut& out, size_t index) : out_(&out), index_(index) {}
    MetricsOut* out_;
    size_t index_;
  };
  Family family(std::string_view name, MetricKind kind, std::string_view help,
                std::initializer_list<std::string_view> labelNames, std::vector<double> bounds = {},
                std::optional<size_t> maxSeries = std::nullopt);

  // The families in declaration order, plus "metrics.series_folded" when any folded.
  std::vector<MetricFamily> take();

 private:
  size_t declare(std::string_view name, MetricKind kind, std::string_view help,
                 std::vector<std::string> labelNames, std::vector<double> bounds, size_t maxSeries);
  // kind: what the caller adds (a histogram or a value), checked before the
  // series is made.
  MetricSample* series(size_t family, std::vector<std::string> labelValues, MetricKind kind);

  size_t maxSeries_;
  uint64_t folded_ = 0;
  std::vector<MetricFamily> families_;
  std::vector<size_t> caps_;  // per family
  std::map<std::string, size_t, std::less<>> byName_;
  // Per family: label values → index in its samples (to add, and to cap).
  std::vector<std::map<std::vector<std::string>, size_t>> seriesIndex_;
};

// "name" for an unlabelled sample, "name{label=value,…}" for a labelled one.
std::string seriesName(const MetricFamily& family, const MetricSample& sample,
                       std::string_view suffix = {});

// Flat view, for tests and terminals: "name" for an unlabelled family,
// "name{label=value,…}" for a labelled sample; histograms give "name_count"
// and "name_sum" (with the labels).
std::map<std::string, double> flatten(const std::vector<MetricFamily>& families);

// Collects every part of a process's statistics when Admin.stats is called.
// Only used on the owning loop thread.
class StatsRegistry {
 public:
  using Source = std::function<void(MetricsOut&)>;
  void add(Source source) { sources_.push_back(std::move(source)); }
  std::vector<MetricFamily> collect() const;

 private:
  std::vector<Source> sources_;
};

}  // namespace zmesh::rpc
