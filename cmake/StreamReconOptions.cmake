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
# An NVIDIA GPU on this machine (nvidia-smi answers): the CUDA code is built for it ("native") and
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
    # The H200's architecture, with its Hopper-only instructions (wgmma: 90a) where nvcc knows them
    # (CUDA 12 and later; 11.8 knows 90 only).
    execute_process(COMMAND ${CMAKE_CUDA_COMPILER} --version OUTPUT_VARIABLE _nvcc_out ERROR_QUIET)
    set(_hopper 90)
    if(_nvcc_out MATCHES "release ([0-9]+)\\." AND CMAKE_MATCH_1 GREATER_EQUAL 12)
      set(_hopper 90a)
    endif()
    if(STREAMRECON_GPU_PRESENT AND _smi_out MATCHES "^[^\n]*, 9\.0$")
      set(CMAKE_CUDA_ARCHITECTURES ${_hopper})  # one H100/H200
    elseif(STREAMRECON_GPU_PRESENT)
      set(CMAKE_CUDA_ARCHITECTURES native)      # the GPUs present
    else()
      set(CMAKE_CUDA_ARCHITECTURES ${_hopper})  # compile checks on CPU machines: the H200's
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
