# mi_rpm_changelog(<debian changelog> <output> <version var>): writes the RPM
# %changelog text (what CPACK_RPM_CHANGELOG_FILE holds) from the Debian
# changelog, one entry per version, and returns the newest entry's version.
#   mi-agent (V) unstable; urgency=medium     * Mon Jan 01 2024 NAME <MAIL> - V-1
#     * Text                             ->   - Text
#       more text                               more text
#    -- NAME <MAIL>  Mon, 01 Jan 2024 00:00:00 +0000
function(mi_rpm_changelog debian output newest_var)
  file(STRINGS ${debian} lines)
  set(rpm "")
  set(version "")
  set(newest "")
  set(body "")
  foreach(line IN LISTS lines)
    if(line MATCHES "^[a-z0-9][a-z0-9.+-]* \\(([^)]+)\\) ")
      set(version ${CMAKE_MATCH_1})
      if(newest STREQUAL "")
        set(newest ${version})
      endif()
      set(body "")
    elseif(line MATCHES "^  \\* (.*)$")
      string(APPEND body "- ${CMAKE_MATCH_1}\n")
    elseif(line MATCHES "^    (.*)$")
      string(APPEND body "  ${CMAKE_MATCH_1}\n")
    elseif(line MATCHES "^ -- (.+)  ([A-Z][a-z][a-z]), ([0-9][0-9]) ([A-Z][a-z][a-z]) ([0-9][0-9][0-9][0-9]) ")
      if(version STREQUAL "")
        message(FATAL_ERROR "${debian}: a trailer line before any entry")
      endif()
      string(APPEND rpm "* ${CMAKE_MATCH_2} ${CMAKE_MATCH_4} ${CMAKE_MATCH_3} ${CMAKE_MATCH_5} "
                        "${CMAKE_MATCH_1} - ${version}-1\n${body}\n")
      set(version "")
    elseif(NOT line STREQUAL "")
      message(FATAL_ERROR "${debian}: not a Debian changelog line: '${line}'")
    endif()
  endforeach()
  if(newest STREQUAL "" OR NOT version STREQUAL "")
    message(FATAL_ERROR "${debian}: no complete entry")
  endif()
  file(WRITE ${output} "${rpm}")
  set(${newest_var} ${newest} PARENT_SCOPE)
endfunction()
