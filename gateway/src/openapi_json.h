// gateway/openapi.json, compiled in (generated from the file at build time).
#pragma once

#include <string_view>

namespace zmesh::gateway {
extern const std::string_view kOpenApiJson;
}
