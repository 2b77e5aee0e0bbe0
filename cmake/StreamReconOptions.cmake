# Resolves the AUTO/ON/OFF options into STREAMRECON_HAVE_* flags; ON fails loudly when missing.

function(streamrecon_resolve name found)
  if(STREAMRECON_${name} STREQUAL "OFF")
    set(STREAMRECON_HAVE_${name} OFF PARENT_SCOPE)
  elseif(${found})
    set(STREAMRECON_HAVE_${name} ON PARENT_SCOPE)
  elseif(STREAMRECON_${name} STREQUAL "ON")
    message(FATAL_ERROR "STREAMRECON_${name}=ON but its dependencies were not found")
  else()
    set(STREAMRECON_HAVE_${name} OFF PARENT_SCOPE)
  endif()
endfunction()

# CUDA
set(_cuda_ok OFF)
if(NOT STREAMRECON_CUDA STREQUAL "OFF")
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    set(_cuda_ok ON)
  endif()
endif()
streamrecon_resolve(CUDA _cuda_ok)
# An NVIDIA GPU on this machine (nvidia-smi answers): the CUDA code is built for it (below) and
# STREAMRECON_TORCH_CUDA=AUTO links the CUDA build of LibTorch (cmake/LibTorch.cmake).
set(STREAMRECON_GPU_PRESENT OFF)
find_program(_nvidia_smi nvidia-smi)
if(_nvidia_smi)
  execute_process(COMMAND ${_nvidia_smi} --query-gpu=name,compute_cap --format=csv,noheader
                  RESULT_VARIABLE _smi_rc OUTPUT_VARIABLE _smi_out OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
  if(_smi_rc EQUAL 0 AND NOT _smi_out STREQUAL "")
    set(STREAMRECON_GPU_PRESENT ON)
    message(STATUS "GPU: ${_smi_out}")
  endif()
endif()
if(STREAMRECON_HAVE_CUDA)
  if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
    # H100/H200 only (every line of nvidia-smi's "name, 9.0"): 90a, the H200's architecture with
    # its Hopper-only instructions (the 8-bit attention's warpgroup kernel); other GPUs: "native";
    # CPU machines: 90a, so that the compile checks cover that kernel (CUDA 12 or later, which the
    # kernels need anyway).
    set(_all_hopper OFF)
    if(STREAMRECON_GPU_PRESENT)
      set(_all_hopper ON)
      string(REPLACE "\n" ";" _gpu_lines "${_smi_out}")
      foreach(_line IN LISTS _gpu_lines)
        if(NOT _line MATCHES ", 9\\.0$")
          set(_all_hopper OFF)
        endif()
      endforeach()
    endif()
    if(NOT STREAMRECON_GPU_PRESENT OR _all_hopper)
      set(CMAKE_CUDA_ARCHITECTURES 90a)
    else()
      set(CMAKE_CUDA_ARCHITECTURES native)
    endif()
  endif()
  enable_language(CUDA)
  set(CMAKE_CUDA_STANDARD 17)
  find_package(CUDAToolkit REQUIRED)
endif()

# OpenCV
set(_cv_ok OFF)
if(NOT STREAMRECON_OPENCV STREQUAL "OFF")
  find_package(OpenCV QUIET COMPONENTS core imgproc imgcodecs videoio)
  set(_cv_ok ${OpenCV_FOUND})
endif()
streamrecon_resolve(OPENCV _cv_ok)

# Open3D
set(_o3d_ok OFF)
if(NOT STREAMRECON_OPEN3D STREQUAL "OFF")
  find_package(Open3D QUIET)
  set(_o3d_ok ${Open3D_FOUND})
endif()
streamrecon_resolve(OPEN3D _o3d_ok)

# Viewer: GLFW + Dear ImGui (Debian's libimgui-dev) + OpenGL
set(_viewer_ok OFF)
if(NOT STREAMRECON_VIEWER STREQUAL "OFF")
  find_package(glfw3 QUIET)
  find_package(OpenGL QUIET)
  find_path(IMGUI_INCLUDE_DIR imgui.h PATH_SUFFIXES imgui)
  find_library(IMGUI_LIBRARY imgui)
  if(glfw3_FOUND AND OpenGL_FOUND AND IMGUI_INCLUDE_DIR AND IMGUI_LIBRARY AND STREAMRECON_HAVE_OPENCV)
    set(_viewer_ok ON)
  endif()
endif()
streamrecon_resolve(VIEWER _viewer_ok)

# Shared compile flags for our own targets.
function(streamrecon_target_defaults target)
  target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wno-unused-parameter>)
endfunction()

# Optional dependencies of one target: linked privately with a STREAMRECON_HAVE_* define when
# found, nothing otherwise (the code checks the define).
function(streamrecon_use_opencv target)
  if(STREAMRECON_HAVE_OPENCV)
    target_link_libraries(${target} PRIVATE ${OpenCV_LIBS})
    target_include_directories(${target} SYSTEM PRIVATE ${OpenCV_INCLUDE_DIRS})
    target_compile_definitions(${target} PRIVATE STREAMRECON_HAVE_OPENCV=1)
  endif()
endfunction()

function(streamrecon_use_open3d target)
  if(STREAMRECON_HAVE_OPEN3D)
    target_link_libraries(${target} PRIVATE Open3D::Open3D)
    target_compile_definitions(${target} PRIVATE STREAMRECON_HAVE_OPEN3D=1)
  endif()
endfunction()
