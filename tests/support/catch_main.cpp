// Catch2's implementation and main, compiled once for every test binary: with
// Catch2 2.x's single header this one file is most of a test binary's build.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
