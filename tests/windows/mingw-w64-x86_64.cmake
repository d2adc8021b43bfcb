# CMake toolchain for cross-building mi-agent (and its dependencies) for 64-bit
# Windows with Debian's mingw-w64 (package g++-mingw-w64-x86-64-posix).
#
#   cmake -DCMAKE_TOOLCHAIN_FILE=tests/windows/mingw-w64-x86_64.cmake \
#         -DMI_WIN_PREFIX=/path/to/prefix ...
#
# MI_WIN_PREFIX is the prefix holding the cross-built libuv, curl, googletest,
# nlohmann and llhttp headers (tests/windows/build-and-test.sh makes it). It may
# also come from the environment variable of the same name.
# Tests run through Wine (CMAKE_CROSSCOMPILING_EMULATOR), so ctest and
# gtest_discover_tests work unchanged; set WINEPREFIX in the environment.

set(CMAKE_SYSTEM_NAME Windows)
set(CMAKE_SYSTEM_PROCESSOR x86_64)

# The -posix variants: std::thread and std::mutex need the winpthreads model.
set(CMAKE_C_COMPILER x86_64-w64-mingw32-gcc-posix)
set(CMAKE_CXX_COMPILER x86_64-w64-mingw32-g++-posix)
set(CMAKE_RC_COMPILER x86_64-w64-mingw32-windres)
set(CMAKE_AR x86_64-w64-mingw32-ar CACHE FILEPATH "archiver")
set(CMAKE_RANLIB x86_64-w64-mingw32-ranlib CACHE FILEPATH "ranlib")

if(NOT MI_WIN_PREFIX AND DEFINED ENV{MI_WIN_PREFIX})
  set(MI_WIN_PREFIX "$ENV{MI_WIN_PREFIX}")
endif()
# try_compile projects re-read this file; hand them the prefix too.
list(APPEND CMAKE_TRY_COMPILE_PLATFORM_VARIABLES MI_WIN_PREFIX)

set(CMAKE_FIND_ROOT_PATH /usr/x86_64-w64-mingw32 ${MI_WIN_PREFIX})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

set(CMAKE_CROSSCOMPILING_EMULATOR wine)
