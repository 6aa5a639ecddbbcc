#include "zmesh/rpc/metrics.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <stdexcept>

#include "zmesh/rpc/metrics_wire.h"

namespace zmesh::rpc {

std::string prometheusName(const MetricFamily& family) {
  std::string out = "zmesh_" + family.name;
  std::replace(out.begin(), out.end(), '.', '_');
  if (family.kind == MetricKind::kCounter) out += "_total";
  return out;
}

std::string_view kindName(MetricKind kind) {
  switch (kind) {
    case MetricKind::kCounter:
      return "counter";
    case MetricKind::kGauge:
      return "gauge";
    case MetricKind::kHistogram:
      return "histogram";
  }
  return "gauge";
}

namespace {

bool validLabelName(std::string_view name) {
  if (name.empty() || name.starts_with("__") || (name.front() >= '0' && name.front() <= '9'))
    return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
  });
}

}  // namespace

std::optional<std::string> familyError(const MetricFamily& f) {
  if (f.name.empty() || !std::all_of(f.name.begin(), f.name.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.';
      }))
    return "metric name '" + f.name + "' is not [a-z0-9_.]+";
  std::set<std::string_view> seen;
  for (const std::string& label : f.labelNames) {
    if (!validLabelName(label))
      return "metric '" + f.name + "': label name '" + label + "' is not [a-zA-Z_][a-zA-Z0-9_]*";
    if (label == "service" || label == "le" || label == "quantile")
      return "metric '" + f.name + "': label name '" + label + "' is reserved";
    if (!seen.insert(label).second) return "metric '" + f.name + "': label '" + label + "' twice";
  }
  if (f.kind == MetricKind::kHistogram) {
    for (size_t i = 0; i < f.bounds.size(); ++i)
      if (!std::isfinite(f.bounds[i]) || (i > 0 && !(f.bounds[i - 1] < f.bounds[i])))
        return "metric '" + f.name + "': bounds not finite and strictly ascending";
  } else if (!f.bounds.empty()) {
    return "metric '" + f.name + "': bounds on a " + std::string(kindName(f.kind));
  }
  return std::nullopt;
}

void MetricsOut::counter(std::string_view name, std::string_view help, double value) {
  family(name, MetricKind::kCounter, help, {}).sample({}, value);
}

void MetricsOut::gauge(std::string_view name, std::string_view help, double value) {
  family(name, MetricKind::kGauge, help, {}).sample({}, value);
}

MetricsOut::Family MetricsOut::family(std::string_view name, MetricKind kind, std::string_view help,
                                      std::initializer_list<std::string_view> labelNames,
                                      std::vector<double> bounds, std::optional<size_t> maxSeries) {
  return Family(*this, declare(name, kind, help,
                               std::vector<std::string>(labelNames.begin(), labelNames.end()),
                               std::move(bounds), maxSeries.value_or(maxSeries_)));
}

size_t MetricsOut::declare(std::string_view name, MetricKind kind, std::string_view help,
                           std::vector<std::string> labelNames, std::vector<double> bounds,
                           size_t maxSeries) {
  if (auto it = byName_.find(name); it != byName_.end()) {
    const MetricFamily& f = families_[it->second];
    if (f.kind != kind || f.help != help || f.labelNames != labelNames || f.bounds != bounds ||
        caps_[it->second] != maxSeries)
      throw std::logic_error("metric '" + std::string(name) + "' declared twice, differently");
    return it->second;
  }
  MetricFamily f{std::string(name), kind, std::string(help), std::move(labelNames),
                 std::move(bounds), {}};
  if (auto error = familyError(f)) throw std::logic_error(*error);
  families_.push_back(std::move(f));
  caps_.push_back(maxSeries);
  seriesIndex_.emplace_back();
  byName_.emplace(std::string(name), families_.size() - 1);
  return families_.size() - 1;
}

MetricSample* MetricsOut::series(size_t family, std::vector<std::string> labelValues,
                                 MetricKind kind) {
  MetricFamily& f = families_[family];
  if ((f.kind == MetricKind::kHistogram) != (kind == MetricKind::kHistogram))
    throw std::logic_error("metric '" + f.name + "' is " +
                           (f.kind == MetricKind::kHistogram ? "a histogram: add with histogram()"
                                                             : "not a histogram"));
  if (labelValues.size() != f.labelNames.size())
    throw std::invalid_argument("metric '" + f.name + "': " + std::to_string(labelValues.size()) +
                                " label values for " + std::to_string(f.labelNames.size()) +
                                " labels");
  auto& index = seriesIndex_[family];
  auto it = index.find(labelValues);
  if (it == index.end()) {
    // The cap leaves room for the "_other" series itself.
    if (!f.labelNames.empty() && index.size() + 1 >= caps_[family]) {
      ++folded_;
      labelValues.assign(f.labelNames.size(), std::string(kOther));
      it = index.find(labelValues);
      if (it != index.end()) return &f.samples[it->second];
    }
    MetricSample s;
    s.labelValues = labelValues;
    if (f.kind == MetricKind::kHistogram) s.buckets.assign(f.bounds.size(), 0);
    f.samples.push_back(std::move(s));
    it = index.emplace(std::move(labelValues), f.samples.size() - 1).first;
  }
  return &f.samples[it->second];
}

void MetricsOut::Family::sample(std::initializer_list<std::string_view> labelValues, double value) {
  sample(std::vector<std::string>(labelValues.begin(), labelValues.end()), value);
}

void MetricsOut::Family::sample(const std::vector<std::string>& labelValues, double value) {
  MetricSample* s = out_->series(index_, labelValues, MetricKind::kCounter);
  s->value += value;  // a folded series sums what it folds
}

void MetricsOut::Family::histogram(const std::vector<std::string>& labelValues,
                                   const uint64_t* cumulative, uint64_t count, double sum) {
  MetricSample* s = out_->series(index_, labelValues, MetricKind::kHistogram);
  for (size_t i = 0; i < s->buckets.size(); ++i) s->buckets[i] += cumulative[i];
  s->value += static_cast<double>(count);
  s->sum += sum;
}

std::vector<MetricFamily> MetricsOut::take() {
  if (folded_ > 0)
    gauge("metrics.series_folded",
          "Label sets folded into \"_other\" in this collection: a family was over its cap",
          static_cast<double>(folded_));
  folded_ = 0;
  byName_.clear();
  caps_.clear();
  seriesIndex_.clear();
  return std::move(families_);
}

std::string seriesName(const MetricFamily& f, const MetricSample& s, std::string_view suffix) {
  std::string name = f.name;
  name += suffix;
  if (f.labelNames.empty()) return name;
  name += '{';
  for (size_t i = 0; i < f.labelNames.size(); ++i)
    name +=
        (i ? "," : "") + f.labelNames[i] + "=" + (i < s.labelValues.size() ? s.labelValues[i] : "");
  name += '}';
  return name;
}

std::map<std::string, double> flatten(const std::vector<MetricFamily>& families) {
  std::map<std::string, double> out;
  for (const MetricFamily& f : families)
    for (const MetricSample& s : f.samples) {
      if (f.kind == MetricKind::kHistogram) {
        out[seriesName(f, s, "_count")] = s.value;
        out[seriesName(f, s, "_sum")] = s.sum;
      } else {
        out[seriesName(f, s)] = s.value;
      }
    }
  return out;
}

std::vector<MetricFamily> StatsRegistry::collect() const {
  MetricsOut out;
  for (auto& s : sources_) s(out);
  return out.take();
}

namespace {

idl::MetricFamily::Kind toWire(MetricKind kind) {
  switch (kind) {
    case MetricKind::kCounter:
      return idl::MetricFamily::Kind::COUNTER;
    case MetricKind::kGauge:
      return idl::MetricFamily::Kind::GAUGE;
    case MetricKind::kHistogram:
      return idl::MetricFamily::Kind::HISTOGRAM;
  }
  return idl::MetricFamily::Kind::GAUGE;
}

MetricKind fromWire(idl::MetricFamily::Kind kind) {
  switch (kind) {
    case idl::MetricFamily::Kind::COUNTER:
      return MetricKind::kCounter;
    case idl::MetricFamily::Kind::HISTOGRAM:
      return MetricKind::kHistogram;
    default:
      return MetricKind::kGauge;
  }
}

}  // namespace

void writeFamilies(const std::vector<MetricFamily>& families,
                   idl::Admin::StatsResults::Builder results) {
  auto list = results.initFamilies(static_cast<unsigned>(families.size()));
  for (size_t i = 0; i < families.size(); ++i) {
    const MetricFamily& f = families[i];
    auto b = list[static_cast<unsigned>(i)];
    b.setName(f.name);
    b.setKind(toWire(f.kind));
    b.setHelp(f.help);
    auto names = b.initLabelNames(static_cast<unsigned>(f.labelNames.size()));
    for (size_t j = 0; j < f.labelNames.size(); ++j)
      names.set(static_cast<unsigned>(j), f.labelNames[j]);
    auto bounds = b.initBounds(static_cast<unsigned>(f.bounds.size()));
    for (size_t j = 0; j < f.bounds.size(); ++j) bounds.set(static_cast<unsigned>(j), f.bounds[j]);
    auto samples = b.initSamples(static_cast<unsigned>(f.samples.size()));
    for (size_t j = 0; j < f.samples.size(); ++j) {
      const MetricSample& s = f.samples[j];
      auto sb = samples[static_cast<unsigned>(j)];
      auto values = sb.initLabelValues(static_cast<unsigned>(s.labelValues.size()));
      for (size_t k = 0; k < s.labelValues.size(); ++k)
        values.set(static_cast<unsigned>(k), s.labelValues[k]);
      sb.setValue(s.value);
      auto buckets = sb.initBuckets(static_cast<unsigned>(s.buckets.size()));
      for (size_t k = 0; k < s.buckets.size(); ++k)
        buckets.set(static_cast<unsigned>(k), s.buckets[k]);
      sb.setSum(s.sum);
    }
  }
}

std::vector<MetricFamily> readFamilies(idl::Admin::StatsResults::Reader results) {
  std::vector<MetricFamily> out;
  for (auto f : results.getFamilies()) {
    MetricFamily family;
    family.name = f.getName().cStr();
    family.kind = fromWire(f.getKind());
    family.help = f.getHelp().cStr();
    for (auto n : f.getLabelNames()) family.labelNames.emplace_back(n.cStr());
    for (double b : f.getBounds()) family.bounds.push_back(b);
    for (auto s : f.getSamples()) {
      MetricSample sample;
      for (auto v : s.getLabelValues()) sample.labelValues.emplace_back(v.cStr());
      sample.value = s.getValue();
      for (uint64_t b : s.getBuckets()) sample.buckets.push_back(b);
      sample.sum = s.getSum();
      family.samples.push_back(std::move(sample));
    }
    out.push_back(std::move(family));
  }
  return out;
}

}  // namespace zmesh::rpc
