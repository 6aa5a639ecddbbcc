#include "zmesh/rpc/status.h"

#include <array>
#include <utility>

namespace zmesh::rpc {
namespace {

constexpr std::array<std::pair<StatusCode, std::string_view>, 15> kNames{{
    {StatusCode::OK, "OK"},
    {StatusCode::INVALID_ARGUMENT, "INVALID_ARGUMENT"},
    {StatusCode::FAILED_PRECONDITION, "FAILED_PRECONDITION"},
    {StatusCode::UNAUTHENTICATED, "UNAUTHENTICATED"},
    {StatusCode::PERMISSION_DENIED, "PERMISSION_DENIED"},
    {StatusCode::NOT_FOUND, "NOT_FOUND"},
    {StatusCode::ALREADY_EXISTS, "ALREADY_EXISTS"},
    {StatusCode::CONFLICT, "CONFLICT"},
    {StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE"},
    {StatusCode::RESOURCE_EXHAUSTED, "RESOURCE_EXHAUSTED"},
    {StatusCode::INTERNAL, "INTERNAL"},
    {StatusCode::UNIMPLEMENTED, "UNIMPLEMENTED"},
    {StatusCode::UNAVAILABLE, "UNAVAILABLE"},
    {StatusCode::DEADLINE_EXCEEDED, "DEADLINE_EXCEEDED"},
    {StatusCode::INSUFFICIENT_STORAGE, "INSUFFICIENT_STORAGE"},
}};

// fail() writes the code in front of the message. kj 0.9 exceptions carry no
// structured details, and the description is ours end to end inside a process.
constexpr std::string_view kTag = "zmesh-status:";

}  // namespace

std::string_view statusName(StatusCode code) {
  for (auto& [c, name] : kNames)
    if (c == code) return name;
  return "UNKNOWN";
}

bool isKnown(StatusCode code) { return statusName(code) != "UNKNOWN"; }

bool parseStatusName(std::string_view name, StatusCode& out) {
  for (auto& [c, n] : kNames)
    if (n == name) {
      out = c;
      return true;
    }
  return false;
}

void fail(StatusCode code, std::string_view message) { throw statusException(code, message); }

kj::Exception statusException(StatusCode code, std::string_view message) {
  auto type = code == StatusCode::UNAVAILABLE     ? kj::Exception::Type::OVERLOADED
              : code == StatusCode::UNIMPLEMENTED ? kj::Exception::Type::UNIMPLEMENTED
                                                  : kj::Exception::Type::FAILED;
  std::string description(kTag);
  description += statusName(code);
  description += ':';
  description += message;
  return kj::Exception(type, __FILE__, __LINE__,
                       kj::heapString(description.data(), description.size()));
}

Status statusFromException(const kj::Exception& e) {
  std::string_view d(e.getDescription().cStr(), e.getDescription().size());
  if (d.starts_with(kTag)) {
    d.remove_prefix(kTag.size());
    auto colon = d.find(':');
    StatusCode code;
    if (colon != std::string_view::npos && parseStatusName(d.substr(0, colon), code))
      return {code, std::string(d.substr(colon + 1))};
  }
  switch (e.getType()) {
    case kj::Exception::Type::UNIMPLEMENTED:
      return {StatusCode::UNIMPLEMENTED, std::string(d)};
    case kj::Exception::Type::OVERLOADED:
    case kj::Exception::Type::DISCONNECTED:
      return {StatusCode::UNAVAILABLE, std::string(d)};
    default:
      return {StatusCode::INTERNAL, std::string(d)};
  }
}

RpcError::RpcError(StatusCode code, const std::string& message)
    : std::runtime_error(std::string(statusName(code)) + ": " + message),
      code_(code),
      detail_(message) {}

}  // namespace zmesh::rpc
