# Debian's hardening build flags (what `dpkg-buildflags` gives with
# hardening=+all on a current release), for the Linux release build:
#   -D_FORTIFY_SOURCE=2 (needs optimisation: not in Debug), -fstack-protector-strong,
#   -fstack-clash-protection, -fcf-protection (x86_64), -Wformat -Werror=format-security,
#   -Wl,-z,relro -Wl,-z,now, PIE.
# Sanitizer and fuzz builds bring their own instrumentation (and _FORTIFY_SOURCE
# hides the calls ASan intercepts), so there the flags stay off whatever
# MI_HARDENING says. Included before any target exists, so every target
# (llhttp too) gets them. lintian's hardening-* tags and readelf's BIND_NOW,
# GNU_RELRO and DYN (PIE) are checked by tests/integration/test_package.py.
set(mi_hardening_default OFF)
if(CMAKE_SYSTEM_NAME STREQUAL "Linux" AND NOT MI_ASAN AND NOT MI_FUZZ)
  set(mi_hardening_default ON)
endif()
option(MI_HARDENING "Debian's hardening compile and link flags (Linux, not with sanitizers)"
       ${mi_hardening_default})

if(NOT MI_HARDENING)
  return()
endif()
if(MI_ASAN OR MI_FUZZ OR NOT CMAKE_SYSTEM_NAME STREQUAL "Linux")
  message(STATUS "MI_HARDENING ignored: only for Linux builds without sanitizers")
  return()
endif()

include(CheckPIESupported)
check_pie_supported(LANGUAGES C CXX)
set(CMAKE_POSITION_INDEPENDENT_CODE ON)

# -U first: some compilers predefine _FORTIFY_SOURCE (at another level).
add_compile_options(
  "$<$<NOT:$<CONFIG:Debug>>:-U_FORTIFY_SOURCE;-D_FORTIFY_SOURCE=2>"
  -fstack-protector-strong -fstack-clash-protection
  -Wformat -Werror=format-security)
if(CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64|i.86)$")
  add_compile_options(-fcf-protection)
endif()
add_link_options(-Wl,-z,relro -Wl,-z,now)
message(STATUS "Hardening flags on (MI_HARDENING)")
