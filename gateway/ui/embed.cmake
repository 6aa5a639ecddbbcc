# Turns the dashboard's files into one C++ source: a table path → (content
# type, ETag, bytes). Run at build time by gateway/CMakeLists.txt:
#   cmake -DUI_DIR=<gateway/ui> -DUI_FILES=index.html,app.js,style.css -DOUT=<ui_files.cpp> -P embed.cmake
# Every byte is written as a \x escape, so any file (a PNG too) survives.

set(types
  html "text/html\; charset=utf-8"
  js "text/javascript\; charset=utf-8"
  css "text/css\; charset=utf-8"
  svg "image/svg+xml"
  png "image/png"
  ico "image/x-icon"
  json "application/json")

string(REPEAT "[0-9a-f]" 64 chunk)  # 32 bytes a line of the literal
set(out "// Generated from gateway/ui/ by gateway/ui/embed.cmake: edit those files, not this one.\n")
string(APPEND out "#include \"${UI_DIR}/ui_files.h\"\n\nnamespace zmesh::gateway::ui {\n\n")
set(index 0)
set(table "")
string(REPLACE "," ";" UI_FILES "${UI_FILES}")
foreach(name IN LISTS UI_FILES)
  get_filename_component(ext "${name}" LAST_EXT)
  string(SUBSTRING "${ext}" 1 -1 ext)
  list(FIND types "${ext}" at)
  if(at LESS 0)
    message(FATAL_ERROR "embed.cmake: no content type for ${name}")
  endif()
  math(EXPR at "${at} + 1")
  list(GET types ${at} type)
  file(READ "${UI_DIR}/${name}" hex HEX)
  file(SHA256 "${UI_DIR}/${name}" sha)
  string(SUBSTRING "${sha}" 0 32 sha)
  file(SIZE "${UI_DIR}/${name}" size)
  string(REGEX REPLACE "(${chunk})" "\\1\n" hex "${hex}")
  string(REGEX REPLACE "([0-9a-f][0-9a-f])" "\\\\x\\1" hex "${hex}")
  string(REPLACE "\n" "\"\n    \"" hex "${hex}")
  string(APPEND out "static const char kBytes${index}[] =\n    \"${hex}\";\n\n")
  string(APPEND table "    {\"${name}\", \"${type}\", \"\\\"${sha}\\\"\", {kBytes${index}, ${size}}},\n")
  math(EXPR index "${index} + 1")
endforeach()
string(APPEND out "const File kFiles[] = {\n${table}};\n")
string(APPEND out "const size_t kFileCount = ${index};\n\n}  // namespace zmesh::gateway::ui\n")

file(WRITE "${OUT}" "${out}")
