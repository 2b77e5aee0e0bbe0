# Locates LibTorch and exposes it as the target `streamrecon::torch`.
#
# Two ways, chosen by STREAMRECON_TORCH_CUDA (AUTO by default; the result is STREAMRECON_HAVE_TORCH_CUDA):
#  * the CUDA build (GPU machines): find_package(Torch) with the full CUDA LibTorch of the torch
#    found below (its share/cmake), or of CMAKE_PREFIX_PATH. AUTO takes it when nvcc is found, a
#    GPU answers nvidia-smi and that torch has libtorch_cuda.so (with its CUDA library wheels,
#    which scripts/setup.sh installs on GPU machines).
#  * otherwise (CPU machines): import libtorch_cpu + libc10 straight from the torch wheel
#    (STREAMRECON_TORCH_DIR, or the wheel found by python3), without the CUDA parts of torch,
#    whose dependencies (cuDNN, NCCL, ...) the PyPI wheel leaves to other packages.

set(STREAMRECON_TORCH_CUDA "AUTO" CACHE STRING "Link the CUDA build of LibTorch through find_package(Torch): AUTO, ON or OFF")
set_property(CACHE STREAMRECON_TORCH_CUDA PROPERTY STRINGS AUTO ON OFF)
set(STREAMRECON_TORCH_DIR "" CACHE PATH "Root of a torch installation (the folder holding include/ and lib/)")

# LibTorch ships its own (newer) fmt and pybind11 headers in include/, which would shadow the system
# fmt that spdlog was built against and Debian's pybind11 that the Python module is built with. We
# expose a shim include folder holding links to every entry of torch's include folder but those.
function(streamrecon_torch_include_shim torch_include out_var)
  set(shim "${CMAKE_BINARY_DIR}/torch_include_shim")
  file(MAKE_DIRECTORY "${shim}")
  file(GLOB entries RELATIVE "${torch_include}" "${torch_include}/*")
  foreach(entry IN LISTS entries)
    if(entry STREQUAL "fmt" OR entry STREQUAL "pybind11")
      file(REMOVE "${shim}/${entry}")  # a link left by an older configuration
    elseif(NOT EXISTS "${shim}/${entry}")
      file(CREATE_LINK "${torch_include}/${entry}" "${shim}/${entry}" SYMBOLIC)
    endif()
  endforeach()
  set(${out_var} "${shim}" PARENT_SCOPE)
endfunction()


set(STREAMRECON_VENV "${CMAKE_SOURCE_DIR}/.venv" CACHE PATH "The project's Python environment (scripts/setup.sh)")
if(NOT STREAMRECON_TORCH_DIR)
  # The project's own environment first (scripts/setup.sh puts the torch wheel there), then any python3.
  if(EXISTS "${STREAMRECON_VENV}/bin/python3")
    set(Python3_EXECUTABLE "${STREAMRECON_VENV}/bin/python3")
    set(Python3_Interpreter_FOUND TRUE)
  else()
    find_package(Python3 COMPONENTS Interpreter QUIET)
  endif()
  if(Python3_Interpreter_FOUND)
    # find_spec does not import torch (importing it would need its CUDA libraries).
    execute_process(
      COMMAND ${Python3_EXECUTABLE} -c "import importlib.util,os;s=importlib.util.find_spec('torch');print(os.path.dirname(s.origin) if s else '')"
      OUTPUT_VARIABLE _torch_dir OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
    set(STREAMRECON_TORCH_DIR "${_torch_dir}" CACHE PATH "Root of a torch installation" FORCE)
  endif()
endif()

set(STREAMRECON_HAVE_TORCH_CUDA OFF)
if(STREAMRECON_TORCH_CUDA STREQUAL "ON")
  set(STREAMRECON_HAVE_TORCH_CUDA ON)
elseif(STREAMRECON_TORCH_CUDA STREQUAL "AUTO" AND STREAMRECON_HAVE_CUDA AND STREAMRECON_GPU_PRESENT
       AND EXISTS "${STREAMRECON_TORCH_DIR}/lib/libtorch_cuda.so")
  set(STREAMRECON_HAVE_TORCH_CUDA ON)
  message(STATUS "LibTorch: the CUDA build (a GPU, nvcc and ${STREAMRECON_TORCH_DIR}/lib/libtorch_cuda.so; STREAMRECON_TORCH_CUDA=OFF for the CPU one)")
endif()
if(STREAMRECON_HAVE_TORCH_CUDA)
  if(STREAMRECON_TORCH_DIR AND EXISTS "${STREAMRECON_TORCH_DIR}/share/cmake/Torch")
    list(APPEND CMAKE_PREFIX_PATH "${STREAMRECON_TORCH_DIR}/share/cmake")
  endif()
  # Torch's CMake replaces CMAKE_CUDA_ARCHITECTURES with flags from TORCH_CUDA_ARCH_LIST (else the
  # GPUs it finds, without the arch-specific 9.0a the warpgroup kernel needs): the list is given
  # from CMAKE_CUDA_ARCHITECTURES (90a -> 9.0a) unless set.
  if(DEFINED ENV{TORCH_CUDA_ARCH_LIST} AND NOT DEFINED TORCH_CUDA_ARCH_LIST)
    message(STATUS "LibTorch: TORCH_CUDA_ARCH_LIST $ENV{TORCH_CUDA_ARCH_LIST} from the environment (CMAKE_CUDA_ARCHITECTURES not used)")
  elseif(NOT DEFINED TORCH_CUDA_ARCH_LIST AND CMAKE_CUDA_ARCHITECTURES AND NOT CMAKE_CUDA_ARCHITECTURES MATCHES "native|all")
    set(TORCH_CUDA_ARCH_LIST "")
    foreach(_arch IN LISTS CMAKE_CUDA_ARCHITECTURES)  # 90a -> 9.0a, 80-virtual -> 8.0+PTX, 86-real -> 8.6
      if(_arch MATCHES "^([0-9]+)([0-9])(a?)(-real|-virtual)?$")
        set(_torch_arch "${CMAKE_MATCH_1}.${CMAKE_MATCH_2}${CMAKE_MATCH_3}")
        if(CMAKE_MATCH_4 STREQUAL "-virtual")
          string(APPEND _torch_arch "+PTX")
        endif()
        list(APPEND TORCH_CUDA_ARCH_LIST "${_torch_arch}")
      endif()
    endforeach()
    message(STATUS "LibTorch: TORCH_CUDA_ARCH_LIST ${TORCH_CUDA_ARCH_LIST} (from CMAKE_CUDA_ARCHITECTURES)")
  endif()
  find_package(Torch REQUIRED)
  add_library(streamrecon_torch INTERFACE)
  target_link_libraries(streamrecon_torch INTERFACE ${TORCH_LIBRARIES})
  set(_torch_includes "")
  foreach(_dir IN LISTS TORCH_INCLUDE_DIRS)
    if(EXISTS "${_dir}/fmt" AND EXISTS "${_dir}/ATen")
      streamrecon_torch_include_shim("${_dir}" _dir)
    endif()
    list(APPEND _torch_includes "${_dir}")
  endforeach()
  target_include_directories(streamrecon_torch SYSTEM INTERFACE ${_torch_includes})
  target_compile_definitions(streamrecon_torch INTERFACE STREAMRECON_TORCH_HAS_CUDA=1)
  add_library(streamrecon::torch ALIAS streamrecon_torch)
  return()
endif()

if(NOT STREAMRECON_TORCH_DIR OR NOT EXISTS "${STREAMRECON_TORCH_DIR}/lib/libtorch_cpu.so")
  message(FATAL_ERROR
    "LibTorch not found: expected ${STREAMRECON_TORCH_DIR}/lib/libtorch_cpu.so. "
    "Run `make setup` (installs PyPI's torch wheel) or pass -DSTREAMRECON_TORCH_DIR=<torch root>.")
endif()
message(STATUS "LibTorch (CPU part) from ${STREAMRECON_TORCH_DIR}")

add_library(streamrecon_torch INTERFACE)
streamrecon_torch_include_shim("${STREAMRECON_TORCH_DIR}/include" _torch_shim)
target_include_directories(streamrecon_torch SYSTEM INTERFACE
  "${_torch_shim}"
  "${STREAMRECON_TORCH_DIR}/include/torch/csrc/api/include")
target_link_libraries(streamrecon_torch INTERFACE
  "${STREAMRECON_TORCH_DIR}/lib/libtorch_cpu.so"
  "${STREAMRECON_TORCH_DIR}/lib/libc10.so")
target_compile_definitions(streamrecon_torch INTERFACE _GLIBCXX_USE_CXX11_ABI=1)
# libtorch_cpu of the CUDA wheel needs libcudart/libcupti at load time: from the NVIDIA wheels next
# to torch (scripts/setup.sh installs them), else from the CUDA toolkit.
set(_torch_rpath "${STREAMRECON_TORCH_DIR}/lib")
get_filename_component(_site_packages "${STREAMRECON_TORCH_DIR}" DIRECTORY)
foreach(_dir "${_site_packages}/nvidia/cu13/lib" /usr/local/cuda/lib64 /usr/local/cuda/extras/CUPTI/lib64)
  if(EXISTS "${_dir}")
    list(APPEND _torch_rpath "${_dir}")
  endif()
endforeach()
# Pass the rpath through the link line so every executable that links torch can load it.
foreach(_dir IN LISTS _torch_rpath)
  target_link_options(streamrecon_torch INTERFACE "LINKER:-rpath,${_dir}" "LINKER:-rpath-link,${_dir}")
endforeach()
add_library(streamrecon::torch ALIAS streamrecon_torch)
