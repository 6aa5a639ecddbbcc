// HTTP responses the gateway sends, and the one mapping from service status
// codes to HTTP (DESIGN.md §5). Every error has the JSON body
//   {"error":{"code":"NOT_FOUND","message":"…","request_id":"…"}}
#pragma once

#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/json/monotonic_resource.hpp>
#include <boost/json/object.hpp>
#include <chrono>
#include <string>
#include <string_view>

#include "zmesh/rpc/status.h"

namespace zmesh::gateway {

namespace http = boost::beast::http;
using Request = http::request<http::string_body>;
using Response = http::response<http::string_body>;

http::status httpStatusFor(rpc::StatusCode code);

// A JSON error. `code` is a StatusCode name, or for HTTP-only errors one of
// METHOD_NOT_ALLOWED, URI_TOO_LONG, HEADERS_TOO_LARGE, BAD_REQUEST.
// 401 gets WWW-Authenticate, 429 and 503 get Retry-After (seconds, rounded up).
Response errorResponse(http::status status, std::string_view code, std::string_view message,
                       std::string_view requestId, std::chrono::milliseconds retryAfter);
Response errorResponse(const rpc::Status& status, std::string_view requestId,
                       std::chrono::milliseconds retryAfter);

// Stack memory for building one JSON answer: with it a body of a few fields
// costs no heap allocation (the default resource allocates per node). The
// JSON built on it must not outlive it.
class JsonScratch {
 public:
  boost::json::storage_ptr storage() { return &resource_; }

 private:
  unsigned char buffer_[1024];
  boost::json::monotonic_resource resource_{buffer_, sizeof buffer_};
};

Response jsonResponse(http::status status, const boost::json::object& body);
Response textResponse(http::status status, std::string_view contentType, std::string body);
Response emptyResponse(http::status status);  // 204 and the like

}  // namespace zmesh::gateway
