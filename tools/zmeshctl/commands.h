// zmeshctl's subcommands; main.cpp parses flags and calls one of these.
// Each returns the process exit code; bad input throws std::invalid_argument
// or rpc::ConfigError with a message naming what was wrong.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "zmesh/rpc/metrics.h"

namespace zmesh::ctl {

int cmdUp(const std::string& configPath, bool foreground);
int cmdDown(const std::string& configPath);
int cmdStatus(const std::string& configPath);
// Params from `args` in schema order, then `fields` by name (--key value), or
// from `paramsJson` alone.
int cmdCall(const std::string& configPath, const std::string& service, const std::string& method,
            const std::vector<std::string>& args,
            const std::vector<std::pair<std::string, std::string>>& fields,
            const std::string& paramsJson, bool json, std::chrono::milliseconds timeout);
// Prints events until `count` have arrived (0: forever) or `timeout` passes (0: none).
int cmdEvents(const std::string& configPath, const std::vector<std::string>& prefixes, bool json,
              int64_t count, std::chrono::milliseconds timeout);

// Prints a service's Admin.stats, one line per sample, grouped by family.
int cmdStats(const std::string& configPath, const std::string& service,
             std::chrono::milliseconds timeout);
// The lines cmdStats prints: "name{label=value,…}  kind  value"; a histogram's
// value is "count=… sum=… p50=… p99=…".
std::string formatStats(const std::vector<rpc::MetricFamily>& families);
// The q-quantile (0..1) of a histogram from its cumulative bucket counts, one
// per bound, as Prometheus' histogram_quantile estimates it: linear within the
// bucket the rank falls in (from 0 for the first bucket), the highest bound
// for a rank in the +Inf bucket; NaN when there are no observations.
double histogramQuantile(double q, const std::vector<double>& bounds,
                         const std::vector<uint64_t>& cumulative, double count);

}  // namespace zmesh::ctl
