// Reading the gateway's JSON answers in tests (Boost.JSON; link Boost::json).
#pragma once

#include <boost/json.hpp>
#include <catch2/catch.hpp>
#include <string>

#include "http_client.h"

namespace zmesh::testing {

// The body as JSON; a body that is not JSON fails the test, showing it.
inline boost::json::value parse(const std::string& body) {
  INFO("body: " << body);
  return boost::json::parse(body);
}

// The error body's code and message ({"error":{"code":…,"message":…}}).
inline std::string errorCode(const HttpResponse& r) {
  return std::string(parse(r.body).at("error").at("code").as_string());
}
inline std::string errorMessage(const HttpResponse& r) {
  return std::string(parse(r.body).at("error").at("message").as_string());
}

}  // namespace zmesh::testing
