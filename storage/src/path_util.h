// Path helpers shared by the Env implementations and the journal. Internal.
#pragma once

#include <string>
#include <string_view>

namespace zmesh::storage::detail {

// Collapses repeated slashes and drops a trailing one, so "a//b/" and "a/b"
// name the same directory (the in-memory Env keys its maps by path).
inline std::string normalizePath(std::string_view path) {
  std::string out;
  out.reserve(path.size());
  for (char c : path) {
    if (c == '/' && !out.empty() && out.back() == '/') continue;
    out.push_back(c);
  }
  if (out.size() > 1 && out.back() == '/') out.pop_back();
  return out;
}

// The directory holding `path` ("." for a bare name, "/" for a top-level one).
inline std::string parentDir(std::string_view path) {
  const std::string p = normalizePath(path);
  const size_t slash = p.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return p.substr(0, slash);
}

inline std::string joinPath(std::string_view dir, std::string_view name) {
  std::string out(dir);
  if (!out.empty() && out.back() != '/') out.push_back('/');
  out.append(name);
  return out;
}

}  // namespace zmesh::storage::detail
