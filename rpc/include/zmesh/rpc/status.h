// Expected failures as values, and their one translation to and from the wire.
//
// A service method fails with `fail(code, message)`; the server turns that (or any
// other exception) into the reply's status. A client sees a non-OK reply as an
// `RpcError` carrying the same code.
#pragma once

#include <kj/exception.h>

#include <stdexcept>
#include <string>
#include <string_view>

#include "zmesh/idl/common.capnp.h"

namespace zmesh::rpc {

using StatusCode = idl::StatusCode;

// "NOT_FOUND", "DEADLINE_EXCEEDED", … — the names API.md's JSON error bodies use.
std::string_view statusName(StatusCode code);
// Whether `code` is one this build knows (a newer peer may send others).
bool isKnown(StatusCode code);
// The inverse of statusName; false when `name` is no status.
bool parseStatusName(std::string_view name, StatusCode& out);

struct Status {
  StatusCode code = StatusCode::OK;
  std::string message;
  bool ok() const { return code == StatusCode::OK; }
};

// A kj::Exception that the server maps back to exactly `code` (for rejecting a
// PromiseFulfiller); fail() throws it.
kj::Exception statusException(StatusCode code, std::string_view message);
[[noreturn]] void fail(StatusCode code, std::string_view message);

// What the server replies for an exception escaping a method: a `fail()` keeps
// its code; kj's UNIMPLEMENTED/OVERLOADED/DISCONNECTED map to UNIMPLEMENTED/
// UNAVAILABLE/UNAVAILABLE; anything else is INTERNAL (our bug).
Status statusFromException(const kj::Exception& e);

// Client side: a call that did not answer OK.
class RpcError : public std::runtime_error {
 public:
  RpcError(StatusCode code, const std::string& message);
  StatusCode code() const { return code_; }
  // The message without the "CODE: " prefix that what() carries.
  const std::string& detail() const { return detail_; }

 private:
  StatusCode code_;
  std::string detail_;
};

}  // namespace zmesh::rpc
