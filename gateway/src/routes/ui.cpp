// GET /ui: the live mesh dashboard, files compiled in from gateway/ui/ (no
// web server, no network). Public: the files carry no data; the page's own
// /v1 calls are authenticated as any other. HEAD answers as GET without the
// body (Route::head).
#include <string>
#include <string_view>

#include "../../ui/ui_files.h"
#include "exchange.h"
#include "routes/routes.h"

namespace zmesh::gateway {

namespace {

const ui::File* findFile(std::string_view path) {
  for (size_t i = 0; i < ui::kFileCount; ++i)
    if (ui::kFiles[i].path == path) return &ui::kFiles[i];
  return nullptr;
}

// The page runs only its own files: no inline script, style or handler
// (gateway/ui/ has none), no framing by another site.
constexpr std::string_view kContentSecurityPolicy =
    "default-src 'self'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'";

// Whether an If-None-Match value ("*", or a list of entity tags, weak or not)
// matches `etag`: weak comparison, as RFC 9110 13.1.2 has for If-None-Match.
bool noneMatch(std::string_view header, std::string_view etag) {
  auto opaque = [](std::string_view tag) { return tag.starts_with("W/") ? tag.substr(2) : tag; };
  while (!header.empty()) {
    auto comma = header.find(',');
    auto tag = header.substr(0, comma);
    header = comma == std::string_view::npos ? std::string_view() : header.substr(comma + 1);
    while (!tag.empty() && (tag.front() == ' ' || tag.front() == '\t')) tag.remove_prefix(1);
    while (!tag.empty() && (tag.back() == ' ' || tag.back() == '\t')) tag.remove_suffix(1);
    if (tag == "*" || (!tag.empty() && opaque(tag) == opaque(etag))) return true;
  }
  return false;
}

void serve(const std::shared_ptr<Exchange>& ex, std::string_view path) {
  const ui::File* file = findFile(path);
  if (!file)
    return ex->fail(rpc::StatusCode::NOT_FOUND,
                    "the dashboard has no file \"" + std::string(path) + "\"");
  auto headers = [file](auto& response) {
    response.set(http::field::etag, file->etag);
    // no-cache: revalidated every time, so a rebuilt gateway's page is seen at once.
    response.set(http::field::cache_control, "no-cache");
    response.set("Content-Security-Policy", kContentSecurityPolicy);
    response.set("X-Content-Type-Options", "nosniff");
  };
  auto match = ex->request().find(http::field::if_none_match);
  if (match != ex->request().end() && noneMatch(match->value(), file->etag)) {
    auto response = emptyResponse(http::status::not_modified);
    headers(response);
    return ex->reply(std::move(response));
  }
  auto response = textResponse(http::status::ok, file->contentType, std::string(file->bytes));
  headers(response);
  ex->reply(std::move(response));
}

void page(const std::shared_ptr<Exchange>& ex) { serve(ex, "index.html"); }

void file(const std::shared_ptr<Exchange>& ex) {
  auto name = ex->param("file");
  serve(ex, name.empty() ? "index.html" : name);  // "/ui/" is the page too
}

}  // namespace

void addUiRoutes(Router& router) {
  router.add({http::verb::get, "/ui", std::nullopt, "", false, page, false, false, true});
  router.add({http::verb::get, "/ui/{file}", std::nullopt, "", false, file, false, true, true});
}

}  // namespace zmesh::gateway
