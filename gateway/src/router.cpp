#include "router.h"

#include <algorithm>
#include <stdexcept>

namespace zmesh::gateway {

namespace {

bool isCapture(std::string_view segment) {
  return segment.size() > 2 && segment.front() == '{' && segment.back() == '}';
}

std::vector<std::string> splitPattern(const std::string& pattern) {
  if (pattern.empty() || pattern[0] != '/')
    throw std::logic_error("route pattern '" + pattern + "' must start with '/'");
  std::vector<std::string> out;
  size_t start = 1;
  while (start <= pattern.size()) {
    size_t end = pattern.find('/', start);
    if (end == std::string::npos) end = pattern.size();
    auto segment = pattern.substr(start, end - start);
    if (segment.empty() && end != pattern.size())
      throw std::logic_error("route pattern '" + pattern + "' has an empty segment");
    if (!segment.empty()) out.push_back(std::move(segment));
    start = end + 1;
  }
  return out;
}

}  // namespace

void Router::add(Route route) {
  Compiled compiled{splitPattern(route.pattern)};
  for (size_t i = 0; i < routes_.size(); ++i)
    if (routes_[i].method == route.method && compiled_[i].segments == compiled.segments)
      throw std::logic_error("route " + std::string(http::to_string(route.method)) + " " +
                             route.pattern + " added twice");
  routes_.push_back(std::move(route));
  compiled_.push_back(std::move(compiled));
}

Router::Match Router::match(http::verb method, const std::vector<std::string>& segments) const {
  Match out;
  // A literal segment beats a capture, so /v1/locks/{name}/renew is not taken
  // for a lock named "renew": pick the candidate with the most literal segments.
  int best = -1;
  for (size_t i = 0; i < routes_.size(); ++i) {
    auto& pattern = compiled_[i].segments;
    if (pattern.size() != segments.size()) continue;
    int literals = 0;
    bool ok = true;
    for (size_t s = 0; s < pattern.size() && ok; ++s) {
      if (isCapture(pattern[s]))
        ok = !segments[s].empty() || routes_[i].emptyCaptures;
      else if (pattern[s] == segments[s])
        ++literals;
      else
        ok = false;
    }
    if (!ok) continue;
    if (routes_[i].method != method) {
      if (!out.pathRoute) out.pathRoute = &routes_[i];
      if (std::find(out.allowed.begin(), out.allowed.end(), routes_[i].method) == out.allowed.end())
        out.allowed.push_back(routes_[i].method);
      continue;
    }
    if (literals <= best) continue;
    best = literals;
    out.route = &routes_[i];
    out.params.clear();
    for (size_t s = 0; s < pattern.size(); ++s)
      if (isCapture(pattern[s]))
        out.params.emplace_back(pattern[s].substr(1, pattern[s].size() - 2), segments[s]);
  }
  if (out.route) {
    out.allowed.clear();
    out.pathRoute = nullptr;
  }
  return out;
}

std::string allowHeader(const std::vector<http::verb>& methods) {
  std::string out;
  for (auto m : methods) {
    if (!out.empty()) out += ", ";
    out += std::string(http::to_string(m));
  }
  return out;
}

}  // namespace zmesh::gateway
