# Precompiled <ATen/ATen.h>, one per kind of code instead of one per target: each is about 370 MB
# on disk and a minute of compiling, and a dozen targets include ATen (12 of them took 4.4 GB of a
# 4.5 GB build folder). GCC uses a precompiled header only
# where it is compiled with the same -fpic / -fpie setting, hence two: one for the libraries
# (position-independent code when CMAKE_POSITION_INDEPENDENT_CODE is on) and one for the programs
# and tests (position-independent executables). The targets' other differences (warnings, their own
# -D macros, none of which ATen reads) do not matter to it; a precompiled header that could not be
# used would only cost time, and -Winvalid-pch (which CMake adds) would name it in the build log.
#
#   streamrecon_torch_pch(TARGET)   TARGET's translation units start from the matching one
set(_streamrecon_pch_anchor ${CMAKE_CURRENT_LIST_DIR}/pch_anchor.cc)

add_library(streamrecon_pch_lib OBJECT ${_streamrecon_pch_anchor})
add_library(streamrecon_pch_exe OBJECT ${_streamrecon_pch_anchor})
# (an object library takes -fPIC where CMAKE_POSITION_INDEPENDENT_CODE is on; executables take -fPIE)
set_target_properties(streamrecon_pch_exe PROPERTIES POSITION_INDEPENDENT_CODE OFF)
if(CMAKE_POSITION_INDEPENDENT_CODE)
  target_compile_options(streamrecon_pch_exe PRIVATE -fPIE)
endif()
foreach(_pch streamrecon_pch_lib streamrecon_pch_exe)
  target_link_libraries(${_pch} PRIVATE streamrecon::torch)
  target_precompile_headers(${_pch} PRIVATE <ATen/ATen.h>)
endforeach()

function(streamrecon_torch_pch target)
  get_target_property(_type ${target} TYPE)
  if(_type STREQUAL "EXECUTABLE")
    target_precompile_headers(${target} REUSE_FROM streamrecon_pch_exe)
  else()
    target_precompile_headers(${target} REUSE_FROM streamrecon_pch_lib)
  endif()
endfunction()
