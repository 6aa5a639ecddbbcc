#include "responses.h"

#include <boost/json/serialize.hpp>

namespace zmesh::gateway {

http::status httpStatusFor(rpc::StatusCode code) {
  using rpc::StatusCode;
  switch (code) {
    case StatusCode::OK:
      return http::status::ok;
    case StatusCode::INVALID_ARGUMENT:
    case StatusCode::FAILED_PRECONDITION:
      return http::status::bad_request;
    case StatusCode::UNAUTHENTICATED:
      return http::status::unauthorized;
    case StatusCode::PERMISSION_DENIED:
      return http::status::forbidden;
    case StatusCode::NOT_FOUND:
      return http::status::not_found;
    case StatusCode::ALREADY_EXISTS:
    case StatusCode::CONFLICT:
      return http::status::conflict;
    case StatusCode::PAYLOAD_TOO_LARGE:
      return http::status::payload_too_large;
    case StatusCode::RESOURCE_EXHAUSTED:
      return http::status::too_many_requests;
    case StatusCode::UNIMPLEMENTED:
      return http::status::not_implemented;
    case StatusCode::UNAVAILABLE:
      return http::status::service_unavailable;
    case StatusCode::DEADLINE_EXCEEDED:
      return http::status::gateway_timeout;
    case StatusCode::INSUFFICIENT_STORAGE:
      return http::status::insufficient_storage;
    case StatusCode::INTERNAL:
      break;
  }
  return http::status::internal_server_error;
}

Response errorResponse(http::status status, std::string_view code, std::string_view message,
                       std::string_view requestId, std::chrono::milliseconds retryAfter) {
  JsonScratch scratch;
  boost::json::object error(scratch.storage());
  error["code"] = code;
  error["message"] = message;
  error["request_id"] = requestId;
  boost::json::object body(scratch.storage());
  body["error"] = std::move(error);
  Response response = jsonResponse(status, body);
  if (status == http::status::unauthorized)
    response.set(http::field::www_authenticate, "Bearer realm=\"zmesh\"");
  if (status == http::status::too_many_requests || status == http::status::service_unavailable) {
    auto seconds = std::max<int64_t>(1, (retryAfter.count() + 999) / 1000);
    response.set(http::field::retry_after, std::to_string(seconds));
  }
  return response;
}

Response errorResponse(const rpc::Status& status, std::string_view requestId,
                       std::chrono::milliseconds retryAfter) {
  return errorResponse(httpStatusFor(status.code), rpc::statusName(status.code), status.message,
                       requestId, retryAfter);
}

Response jsonResponse(http::status status, const boost::json::object& body) {
  return textResponse(status, "application/json", boost::json::serialize(body));
}

Response textResponse(http::status status, std::string_view contentType, std::string body) {
  Response response{status, 11};
  response.set(http::field::content_type, contentType);
  response.body() = std::move(body);
  return response;
}

Response emptyResponse(http::status status) { return Response{status, 11}; }

}  // namespace zmesh::gateway
