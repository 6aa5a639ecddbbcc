// The dashboard's files (this folder), compiled into the gateway by
// embed.cmake at build time: GET /ui serves them from memory.
#pragma once

#include <cstddef>
#include <string_view>

namespace zmesh::gateway::ui {

struct File {
  std::string_view path;         // "app.js": the name under gateway/ui/
  std::string_view contentType;  // "text/javascript; charset=utf-8"
  std::string_view etag;         // strong: "\"<sha256 prefix of the bytes>\""
  std::string_view bytes;
};

extern const File kFiles[];
extern const size_t kFileCount;

}  // namespace zmesh::gateway::ui
