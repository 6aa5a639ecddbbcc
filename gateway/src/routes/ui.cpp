// GET /ui: the live mesh dashboard, files compiled in from gateway/ui/ (no
// web server, no network). Public: the files carry no data; the page's own
// /v1 calls are authenticated as any other.
#include <string>

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

void serve(const std::shared_ptr<Exchange>& ex, std::string_view path) {
  const ui::File* file = findFile(path);
  if (!file)
    return ex->fail(rpc::StatusCode::NOT_FOUND,
                    "the dashboard has no file \"" + std::string(path) + "\"");
  // no-cache: revalidated every time, so a rebuilt gateway's page is seen at once.
  auto match = ex->request().find(http::field::if_none_match);
  if (match != ex->request().end() && match->value() == file->etag) {
    auto response = emptyResponse(http::status::not_modified);
    response.set(http::field::etag, file->etag);
    response.set(http::field::cache_control, "no-cache");
    return ex->reply(std::move(response));
  }
  auto response = textResponse(http::status::ok, file->contentType, std::string(file->bytes));
  response.set(http::field::etag, file->etag);
  response.set(http::field::cache_control, "no-cache");
  response.set("X-Content-Type-Options", "nosniff");
  ex->reply(std::move(response));
}

void page(const std::shared_ptr<Exchange>& ex) { serve(ex, "index.html"); }

void file(const std::shared_ptr<Exchange>& ex) {
  auto name = ex->param("file");
  serve(ex, name.empty() ? "index.html" : name);  // "/ui/" is the page too
}

}  // namespace

void addUiRoutes(Router& router) {
  router.add({http::verb::get, "/ui", std::nullopt, "", false, page});
  router.add({http::verb::get, "/ui/{file}", std::nullopt, "", false, file, false, true});
}

}  // namespace zmesh::gateway
