#include "coalescer.h"

namespace zmesh::ratelimit {

DenialCoalescer::DenialCoalescer(Nanos interval, size_t maxKeys)
    : interval_(interval), maxKeys_(maxKeys) {}

std::optional<DeniedEvent> DenialCoalescer::denied(std::string_view rule, std::string_view key,
                                                   bool shadow, Nanos retryAfter, Nanos now) {
  scratch_.assign(rule).push_back('\0');
  scratch_.append(key);
  if (auto it = pending_.find(scratch_); it != pending_.end()) {
    auto& p = it->second;
    ++p.count;
    p.shadowOnly = p.shadowOnly && shadow;
    p.retryAfter = retryAfter;
    ++stats_.coalesced;
    return std::nullopt;
  }
  if (pending_.size() >= maxKeys_) {
    ++stats_.dropped;
    return std::nullopt;
  }
  pending_.emplace(scratch_, Pending{});
  ends_.emplace_back(now + interval_, scratch_);
  ++stats_.published;
  return DeniedEvent{std::string(rule), std::string(key), 1, shadow, retryAfter};
}

std::vector<DeniedEvent> DenialCoalescer::flush(Nanos now) {
  std::vector<DeniedEvent> out;
  while (!ends_.empty() && ends_.front().first <= now) {
    auto mapKey = std::move(ends_.front().second);
    ends_.pop_front();
    auto it = pending_.find(mapKey);
    if (it == pending_.end()) continue;
    auto& p = it->second;
    if (p.count == 0) {
      pending_.erase(it);
      continue;
    }
    auto sep = mapKey.find('\0');
    out.push_back(DeniedEvent{mapKey.substr(0, sep), mapKey.substr(sep + 1), p.count, p.shadowOnly,
                              p.retryAfter});
    ++stats_.published;
    p = Pending{};
    ends_.emplace_back(now + interval_, std::move(mapKey));
  }
  return out;
}

std::optional<Nanos> DenialCoalescer::nextFlush() const {
  if (ends_.empty()) return std::nullopt;
  return ends_.front().first;
}

DenialCoalescer::Stats DenialCoalescer::stats() const {
  Stats s = stats_;
  s.pending = pending_.size();
  return s;
}

}  // namespace zmesh::ratelimit
